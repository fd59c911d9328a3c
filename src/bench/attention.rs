//! Attention benchmarks at the shapes the GQA issue sets bars for (bf16, 32 q / 8 kv heads,
//! head_dim 128), and MLA decode at DeepSeek-V3's (FlashMLA's benchmark shapes: 16 heads, one
//! GPU's share under 8-way tensor parallelism, and all 128). Decode counts the K/V bytes it
//! must read (q and out are negligible); causal prefill counts 4 · (causal pairs) ·
//! num_q_heads · head_dim FLOPs; MLA decode counts the latent rows (576 · 2 bytes per key) and
//! 2 · (576 + 512) FLOPs per key per head.

use super::{random_buffer, time_calls, BenchRecord, Ceilings, OutputCheck, Timing};
use crate::check::{compare, compare_bounded, tolerance, Comparison, Rng};
use crate::kv_cache::{BlockTableView, KvCacheView};
use crate::ops::attention::{attention, AttentionConfig, AttentionKernel, AttentionPlan, KvInput, MLA_DECODE};
use crate::reference::attention::{self as reference, AttentionMask, AttentionShape};
use crate::{DType, Device, Result, TensorView, TensorViewMut};
use cudarc::driver::CudaSlice;
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
/// with its plan, and with `check` the output check of that plan (the op once more into
/// NaN-poisoned output, sampled against the f64 reference: [`check_sampled`]).
#[allow(clippy::too_many_arguments)]
fn time_paged<C: DType>(dev: &Device, batch: usize, q_len: usize, kv_len: usize, page_size: usize, kernel: AttentionKernel, splits: &[(Option<usize>, bool)], check: bool) -> Result<Vec<(Timing, AttentionPlan, Option<OutputCheck>)>> {
    let (total, pages_per_seq) = (batch * q_len, kv_len.div_ceil(page_size));
    let num_pages = batch * pages_per_seq;
    let cache_len = num_pages * page_size * NKV * HD;
    let k = random_buffer::<C>(dev, cache_len, -1.0, 1.0, 1)?;
    let v = random_buffer::<C>(dev, cache_len, -1.0, 1.0, 2)?;
    let table_host = shuffled_pages(num_pages);
    let bt = dev.upload(&table_host)?;
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
    let scales = if C::NAME != "bf16" { crate::kv_cache::KvScales::new(1.0 / 64.0, 1.0 / 32.0) } else { crate::kv_cache::KvScales::ONE };
    if C::NAME != "bf16" {
        cache = cache.with_scales(scales)?;
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
        let output = if check {
            poison(dev, &mut out_buf)?;
            {
                let kv = KvInput::Paged { cache: &cache, table: &table };
                let mut ov = TensorViewMut::contiguous(out_buf.as_view_mut(), [total, NQ, HD])?;
                let mut wv = TensorViewMut::contiguous(ws.as_view_mut(), [wlen])?;
                attention(dev, &qv, &cv, kv, &plan, &cfg, &mut ov, None, Some(&mut wv))?;
            }
            let rc = RowCheck { nq: NQ, heads: sampled_heads(NQ), scale: cfg.scale as f64, k_scale: scales.k as f64, v_scale: scales.v as f64 };
            let (row, page_elems) = (NKV * HD, page_size * NKV * HD);
            Some(check_sampled::<C>(dev, (batch, q_len, kv_len), (NQ, HD, HD), &q, &out_buf, &rc, |s| {
                let pages = &table_host[s * pages_per_seq..(s + 1) * pages_per_seq];
                let k = download_pages(dev, &k, pages, page_elems, kv_len * row)?;
                let v = download_pages(dev, &v, pages, page_elems, kv_len * row)?;
                Ok(SeqKv { k, v: Some(v), nkv: NKV, hd: HD, hdv: HD })
            })?)
        } else {
            None
        };
        out.push((t, plan, output));
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
    let (t, _, output) = time_paged::<C>(dev, batch, 1, kv_len, page_size, AttentionKernel::Auto, &[(None, true)], true)?.remove(0);
    let mut r = decode_record::<C>(format!("b{batch} kv{kv_len} page{page_size}{}", kv_suffix::<C>()), t, batch, kv_len, ceilings);
    r.output = output;
    Ok(r)
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
        let timed = match time_paged::<bf16>(dev, batch, 1, kv_len, 16, AttentionKernel::Auto, &forced, false) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("warpcore bench --tune: attention_decode b{batch} kv{kv_len}: {e}; the sweep stops here");
                return Ok(());
            }
        };
        for (t, p, _) in timed {
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
    let table_host = shuffled_pages(num_pages);
    let bt = dev.upload(&table_host)?;
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
    let latent_scale = if C::NAME != "bf16" { 0.01f32 } else { 1.0 };
    if C::NAME != "bf16" {
        cache = cache.with_scales(crate::kv_cache::KvScales::new(latent_scale, latent_scale))?;
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
    // The output check: K the latent row of 576, V its first 512, one scale.
    poison(dev, &mut out)?;
    {
        let kv = KvInput::Paged { cache: &cache, table: &table };
        let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [batch, heads, hdv])?;
        let mut wv = TensorViewMut::contiguous(ws.as_view_mut(), [wlen])?;
        attention(dev, &qv, &cv, kv, &plan, &cfg, &mut ov, None, Some(&mut wv))?;
    }
    let rc = RowCheck { nq: heads, heads: sampled_heads(heads), scale: cfg.scale as f64, k_scale: latent_scale as f64, v_scale: latent_scale as f64 };
    let output = check_sampled::<C>(dev, (batch, 1, kv_len), (heads, hd, hdv), &q, &out, &rc, |s| {
        let k = download_pages(dev, &pages, &table_host[s * pages_per_seq..(s + 1) * pages_per_seq], page_size * hd, kv_len * hd)?;
        Ok(SeqKv { k, v: None, nkv: 1, hd, hdv })
    })?;
    let bytes = (batch * kv_len * hd * std::mem::size_of::<C>()) as f64;
    let flops = (2 * batch * kv_len * heads * (hd + hdv)) as f64;
    let suffix = if plan.kernel == AttentionKernel::Wgmma { " wgmma" } else { "" };
    let shape = format!("b{batch} kv{kv_len} h{heads} page{page_size}{suffix}{}", kv_suffix::<C>());
    let mut r = if heads <= 32 {
        let mut r = BenchRecord::bandwidth("attention_mla_decode", "bf16", shape, t, bytes, ceilings);
        r.flops = flops;
        r.tflops = flops / (t.median_us * 1e-6) / 1e12;
        r
    } else {
        BenchRecord::compute("attention_mla_decode", "bf16", shape, t, bytes, flops, ceilings)
    };
    r.output = Some(output);
    Ok(r)
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
    poison(dev, &mut out)?;
    {
        let kv = KvInput::Contiguous { k: &kt, v: &vt, cu_seqlens_kv: &cv };
        let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [total, NQ, HD])?;
        let mut wv = TensorViewMut::contiguous(ws.as_view_mut(), [wlen])?;
        attention(dev, &qv, &cv, kv, &plan, &cfg, &mut ov, None, Some(&mut wv))?;
    }
    let rc = RowCheck { nq: NQ, heads: sampled_heads(NQ), scale: cfg.scale as f64, k_scale: 1.0, v_scale: 1.0 };
    let output = check_sampled::<bf16>(dev, (batch, seq_len, seq_len), (NQ, HD, HD), &q, &out, &rc, |s| {
        let rows = s * seq_len..(s + 1) * seq_len;
        Ok(SeqKv { k: download_rows(dev, &k, rows.clone(), NKV * HD)?, v: Some(download_rows(dev, &v, rows, NKV * HD)?), nkv: NKV, hd: HD, hdv: HD })
    })?;
    let pairs = batch * seq_len * (seq_len + 1) / 2;
    let flops = (4 * pairs * NQ * HD) as f64;
    let bytes = (2 * total * NQ * HD * 2 + 2 * total * NKV * HD * 2) as f64;
    let shape = prefill_shape(batch, seq_len, plan.kernel) + if tma || plan.kernel != AttentionKernel::Wgmma { "" } else { " no-tma" };
    let mut r = BenchRecord::compute("attention_prefill", "bf16", shape, t, bytes, flops, ceilings);
    r.output = Some(output);
    Ok(r)
}

/// Causal prefill of `batch` sequences of `seq_len` tokens whose K/V are already in the paged
/// cache (pages of `page_size`, shuffled) of type `C` — what a chunked prefill or an append
/// reads; on `kernel` (`Auto`: the one [`AttentionPlan::with_kv`] picks). Key
/// `"b{batch} q{seq_len} causal page{page_size}[ kv-e4m3][ wgmma]"`.
pub fn bench_prefill_paged<C: DType>(dev: &Device, ceilings: &Ceilings, batch: usize, seq_len: usize, page_size: usize, kernel: AttentionKernel) -> Result<BenchRecord> {
    let (t, plan, output) = time_paged::<C>(dev, batch, seq_len, seq_len, page_size, kernel, &[(None, true)], true)?.remove(0);
    let total = batch * seq_len;
    let pairs = batch * seq_len * (seq_len + 1) / 2;
    let flops = (4 * pairs * NQ * HD) as f64;
    let bytes = (2 * total * NQ * HD * 2 + 2 * total * NKV * HD * std::mem::size_of::<C>()) as f64;
    let suffix = if plan.kernel == AttentionKernel::Wgmma { " wgmma" } else { "" };
    let shape = format!("{} page{page_size}{}{suffix}", prefill_shape(batch, seq_len, AttentionKernel::MmaSync), kv_suffix::<C>());
    let mut r = BenchRecord::compute("attention_prefill", "bf16", shape, t, bytes, flops, ceilings);
    r.output = output;
    Ok(r)
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

// ---- Output check: after the timing, the op once more into NaN-poisoned output, a sample of
// its rows against the f64 reference (src/reference/attention.rs).

/// Elements per host block when poisoning an output (a large output is written in pieces).
const POISON_BLOCK: usize = 4 << 20;

/// Fills `buf` with NaN (the check module's poison: a row the kernel does not write fails).
fn poison<T: DType>(dev: &Device, buf: &mut CudaSlice<T>) -> Result<()> {
    let block = vec![T::NAN; buf.len().min(POISON_BLOCK)];
    let mut at = 0;
    while at < buf.len() {
        let n = block.len().min(buf.len() - at);
        dev.stream().memcpy_htod(&block[..n], &mut buf.slice_mut(at..at + n))?;
        at += n;
    }
    Ok(())
}

/// The sampled sequences of a batch: the first and the last.
fn sampled_seqs(batch: usize) -> Vec<usize> {
    let mut s = vec![0, batch.saturating_sub(1)];
    s.dedup();
    s
}

/// The sampled queries of a sequence of `q_len`: the first, one in the middle, the last.
fn sampled_queries(q_len: usize) -> Vec<usize> {
    let mut q = vec![0, q_len / 2, q_len.saturating_sub(1)];
    q.dedup();
    q
}

/// The sampled query heads: the first, one past the middle (another kv head's group), the last.
fn sampled_heads(nq: usize) -> Vec<usize> {
    let mut h = vec![0, (nq / 2 + 1).min(nq - 1), nq - 1];
    h.dedup();
    h
}

/// One sequence's keys and values on the host, as stored (`C`), dense `[kv_len, nkv, hd]`;
/// `v` None: MLA's latent cache, V the first `hdv` elements of each K row.
struct SeqKv<C> {
    k: Vec<C>,
    v: Option<Vec<C>>,
    nkv: usize,
    hd: usize,
    hdv: usize,
}

impl<C: DType> SeqKv<C> {
    /// Keys 0..visible of kv head `kvh`: (K `[visible, hd]`, V `[visible, hdv]`).
    fn head(&self, kvh: usize, visible: usize) -> (Vec<C>, Vec<C>) {
        let (nkv, hd, hdv) = (self.nkv, self.hd, self.hdv);
        let k: Vec<C> = (0..visible).flat_map(|j| self.k[(j * nkv + kvh) * hd..][..hd].iter().copied()).collect();
        let v: Vec<C> = match &self.v {
            Some(v) => (0..visible).flat_map(|j| v[(j * nkv + kvh) * hdv..][..hdv].iter().copied()).collect(),
            None => (0..visible).flat_map(|j| self.k[(j * nkv + kvh) * hd..][..hdv].iter().copied()).collect(),
        };
        (k, v)
    }
}

/// What a sampled check compares against: the heads, the softmax scale, the cache's scales.
#[derive(Clone, Debug)]
struct RowCheck {
    nq: usize,
    heads: Vec<usize>,
    scale: f64,
    k_scale: f64,
    v_scale: f64,
}

impl RowCheck {
    /// softmax(scale · q·Kᵀ)·V over keys 0..visible of one sequence for query head `h` (its
    /// row `q_row` `[nq, hd]`), in f64: `reference::attention` on that one row (one query, its
    /// visible keys, the head's kv head), so the same sums as the whole reference's row.
    fn reference_row<T: DType, C: DType>(&self, kv: &SeqKv<C>, q_row: &[T], h: usize, visible: usize) -> Vec<f64> {
        let kvh = h / (self.nq / kv.nkv);
        let (k, v) = kv.head(kvh, visible);
        let shape = AttentionShape { q_len: 1, kv_len: visible, num_q_heads: 1, num_kv_heads: 1, head_dim: kv.hd, head_dim_v: kv.hdv };
        let mask = AttentionMask { scale: self.scale, causal: true, window_left: None, softcap: None };
        reference::attention(&q_row[h * kv.hd..][..kv.hd], &k, &v, shape, &mask, self.k_scale, self.v_scale).0
    }

    /// Sequence `seq`'s query `query` (which sees keys 0..visible): the sampled heads of its
    /// output row `got_row` `[nq, hdv]` against [`RowCheck::reference_row`] under the
    /// attention check's tolerance (`check::tolerance::<T>()`, what src/check/attention.rs
    /// compares out with), and the whole row (every head) free of the NaN poison.
    fn compare<T: DType, C: DType>(&self, kv: &SeqKv<C>, (seq, query, visible): (usize, usize, usize), q_row: &[T], got_row: &[T]) -> Vec<Comparison> {
        let hdv = kv.hdv;
        let want: Vec<f64> = self.heads.iter().flat_map(|&h| self.reference_row(kv, q_row, h, visible)).collect();
        let got: Vec<T> = self.heads.iter().flat_map(|&h| got_row[h * hdv..][..hdv].iter().copied()).collect();
        // (names leak a few bytes per record: a bench is a short-lived run)
        let name = |what: String| -> &'static str { Box::leak(what.into_boxed_str()) };
        vec![
            compare(name(format!("out (sequence {seq}, query {query}, heads {:?})", self.heads)), &got, &want, tolerance::<T>()).in_rows(hdv),
            no_poison(name(format!("out (sequence {seq}, query {query}, every head) written")), got_row),
        ]
    }
}

/// A comparison that fails on each NaN of `got` (the poison a kernel left unwritten) and
/// passes any number (`compare_bounded` with an infinite bound: NaN never passes); its
/// Frobenius error is reported as 0 (nothing is compared but the poison).
fn no_poison<T: DType>(what: &'static str, got: &[T]) -> Comparison {
    let mut c = compare_bounded(what, got, &vec![0.0; got.len()], &vec![f64::INFINITY; got.len()], f64::INFINITY);
    c.rel_frobenius = 0.0;
    c.max_abs_err = if c.failures > 0 { f64::NAN } else { 0.0 };
    c
}

/// Rows `rows` (of `width` elements each) of a device buffer.
fn download_rows<T: DType>(dev: &Device, buf: &CudaSlice<T>, rows: std::ops::Range<usize>, width: usize) -> Result<Vec<T>> {
    dev.download(&buf.slice(rows.start * width..rows.end * width))
}

/// One sequence's first `kv_len` slots of a paged cache buffer `[num_pages, page_size, ..]`
/// (`page_elems` elements per page), through its pages `pages` (its block table row): the
/// whole buffer in one copy when the sequence holds a quarter of it or more, else page by page.
fn download_pages<C: DType>(dev: &Device, buf: &CudaSlice<C>, pages: &[i32], page_elems: usize, kv_len_elems: usize) -> Result<Vec<C>> {
    let mut out = Vec::with_capacity(pages.len() * page_elems);
    if 4 * pages.len() * page_elems >= buf.len() {
        let all = dev.download(buf)?;
        for &p in pages {
            out.extend_from_slice(&all[p as usize * page_elems..][..page_elems]);
        }
    } else {
        for &p in pages {
            out.extend(dev.download(&buf.slice(p as usize * page_elems..(p as usize + 1) * page_elems))?);
        }
    }
    out.truncate(kv_len_elems);
    Ok(out)
}

/// The sampled check of an output `out` `[total, nq, hdv]` the op has just written over NaN:
/// per sampled sequence its K/V (`seq_kv(s)`), per sampled query its q row and output row.
/// q_lens, kv_lens uniform over the batch (the bench's shapes); queries bottom-right aligned.
#[allow(clippy::too_many_arguments)]
fn check_sampled<C: DType>(
    dev: &Device,
    (batch, q_len, kv_len): (usize, usize, usize),
    (nq, hd, hdv): (usize, usize, usize),
    q: &CudaSlice<bf16>,
    out: &CudaSlice<bf16>,
    check: &RowCheck,
    mut seq_kv: impl FnMut(usize) -> Result<SeqKv<C>>,
) -> Result<OutputCheck> {
    let (seqs, queries) = (sampled_seqs(batch), sampled_queries(q_len));
    let mut comparisons = Vec::new();
    for &s in &seqs {
        let kv = seq_kv(s)?;
        for &i in &queries {
            let row = s * q_len + i;
            let q_row = download_rows(dev, q, row..row + 1, nq * hd)?;
            let got = download_rows(dev, out, row..row + 1, nq * hdv)?;
            comparisons.extend(check.compare(&kv, (s, i, kv_len - q_len + i + 1), &q_row, &got));
        }
    }
    Ok(OutputCheck::of(&format!("sequences {seqs:?} × queries {queries:?} × heads {:?} vs f64", check.heads), &comparisons))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::F8E4M3;

    /// A batch's dense inputs: q `[batch · q_len, nq, hd]`, per sequence K `[kv_len, nkv, hd]`
    /// and V `[kv_len, nkv, hdv]` (None: MLA, V the first hdv of K's rows).
    struct Case<C> {
        q: Vec<bf16>,
        seqs: Vec<SeqKv<C>>,
    }

    fn case<C: DType>(batch: usize, q_len: usize, kv_len: usize, (nq, nkv, hd, hdv): (usize, usize, usize, usize), latent: bool, seed: u64) -> Case<C> {
        let mut rng = Rng::new(seed);
        let q = rng.vec(batch * q_len * nq * hd, -1.0, 1.0);
        let seqs = (0..batch)
            .map(|_| SeqKv { k: rng.vec(kv_len * nkv * hd, -1.0, 1.0), v: (!latent).then(|| rng.vec(kv_len * nkv * hdv, -1.0, 1.0)), nkv, hd, hdv })
            .collect();
        Case { q, seqs }
    }

    /// The whole reference of sequence `s` (reference::attention over its dense K/V).
    fn full<C: DType>(c: &Case<C>, s: usize, (q_len, kv_len): (usize, usize), nq: usize, rc: &RowCheck) -> Vec<f64> {
        let kv = &c.seqs[s];
        let (hd, hdv) = (kv.hd, kv.hdv);
        let v: Vec<C> = match &kv.v {
            Some(v) => v.clone(),
            None => kv.k.chunks(hd).flat_map(|r| r[..hdv].to_vec()).collect(),
        };
        let shape = AttentionShape { q_len, kv_len, num_q_heads: nq, num_kv_heads: kv.nkv, head_dim: hd, head_dim_v: hdv };
        let mask = AttentionMask { scale: rc.scale, causal: true, window_left: None, softcap: None };
        reference::attention(&c.q[s * q_len * nq * hd..][..q_len * nq * hd], &kv.k, &v, shape, &mask, rc.k_scale, rc.v_scale).0
    }

    /// The sampled rows' reference equals the whole reference's rows, bit for bit: GQA, an FP8
    /// cache with its scales, MLA's latent (V = the first hdv of each K row); causal prefill
    /// (queries seeing 1 .. kv_len keys) and decode.
    fn sampled_rows_are_the_full_references_rows<C: DType>(dims: (usize, usize, usize, usize), latent: bool, (k_scale, v_scale): (f64, f64)) {
        let (nq, _, hd, hdv) = dims;
        for (batch, q_len, kv_len) in [(3, 7, 7), (2, 1, 40), (1, 5, 12)] {
            let c = case::<C>(batch, q_len, kv_len, dims, latent, 5);
            let rc = RowCheck { nq, heads: sampled_heads(nq), scale: 0.3, k_scale, v_scale };
            for s in sampled_seqs(batch) {
                let want = full(&c, s, (q_len, kv_len), nq, &rc);
                for i in sampled_queries(q_len) {
                    let q_row = &c.q[(s * q_len + i) * nq * hd..][..nq * hd];
                    for &h in &rc.heads {
                        let got = rc.reference_row(&c.seqs[s], q_row, h, kv_len - q_len + i + 1);
                        assert_eq!(got, want[(i * nq + h) * hdv..][..hdv], "batch {batch} q {q_len} kv {kv_len}: sequence {s} query {i} head {h}");
                    }
                }
            }
        }
    }

    #[test]
    fn sampled_rows_equal_the_full_reference() {
        sampled_rows_are_the_full_references_rows::<bf16>((8, 2, 16, 16), false, (1.0, 1.0));
        sampled_rows_are_the_full_references_rows::<F8E4M3>((8, 2, 16, 16), false, (1.0 / 64.0, 1.0 / 32.0));
        sampled_rows_are_the_full_references_rows::<bf16>((6, 1, 24, 16), true, (1.0, 1.0));
        assert_eq!(sampled_heads(32), vec![0, 17, 31]);
        assert_eq!(sampled_heads(1), vec![0]);
        assert_eq!((sampled_seqs(1), sampled_queries(1), sampled_queries(16384)), (vec![0], vec![0], vec![0, 8192, 16383]));
    }

    /// The sampled comparison passes the reference rounded to bf16, and fails an output over
    /// three quarters of the keys (a skipped split), a wrong head, and NaN poison left in a head
    /// it does not sample.
    #[test]
    fn the_sampled_comparison_catches_skipped_keys_a_wrong_head_and_poison() {
        let (nq, nkv, hd) = (8, 2, 32);
        let (batch, q_len, kv_len) = (2, 1, 300);
        let c = case::<bf16>(batch, q_len, kv_len, (nq, nkv, hd, hd), false, 9);
        let rc = RowCheck { nq, heads: sampled_heads(nq), scale: 1.0 / (hd as f64).sqrt(), k_scale: 1.0, v_scale: 1.0 };
        let round = |x: &[f64]| x.iter().map(|&v| bf16::from_f64(v)).collect::<Vec<_>>();
        for s in 0..batch {
            let kv = &c.seqs[s];
            let q_row = &c.q[s * nq * hd..][..nq * hd];
            let right = round(&full(&c, s, (q_len, kv_len), nq, &rc));
            let passed = |got: &[bf16]| rc.compare(kv, (s, 0, kv_len), q_row, got).iter().all(Comparison::passed);
            assert!(passed(&right), "sequence {s}: the reference failed");
            // Only the first three quarters of the keys (a skipped split's remainder).
            let quarter = kv_len * 3 / 4;
            let mut seqs: Vec<SeqKv<bf16>> = c.seqs.iter().map(|x| SeqKv { k: x.k.clone(), v: x.v.clone(), nkv, hd, hdv: hd }).collect();
            seqs[s] = SeqKv { k: kv.k[..quarter * nkv * hd].to_vec(), v: kv.v.as_ref().map(|v| v[..quarter * nkv * hd].to_vec()), nkv, hd, hdv: hd };
            let split_skipped = round(&full(&Case { q: c.q.clone(), seqs }, s, (q_len, quarter), nq, &rc));
            assert!(!passed(&split_skipped), "sequence {s}: a quarter of the keys skipped passed");
            // The last head's row swapped with head 0's: a wrong head.
            let mut swapped = right.clone();
            let last = nq - 1;
            for e in 0..hd {
                swapped.swap(e, last * hd + e);
            }
            assert!(!passed(&swapped), "sequence {s}: swapped heads passed");
            // Poison in head 1, which the values do not sample.
            assert!(!rc.heads.contains(&1));
            let mut poisoned = right.clone();
            poisoned[hd + 3] = bf16::NAN;
            let got = rc.compare(kv, (s, 0, kv_len), q_row, &poisoned);
            assert!(got[0].passed() && !got[1].passed(), "sequence {s}: poison outside the sampled heads passed: {got:?}");
        }
        // The record's verdict: passed with the worst relative error; failed names the row.
        let kv = &c.seqs[0];
        let right = round(&full(&c, 0, (q_len, kv_len), nq, &rc));
        let ok = OutputCheck::of("x", &rc.compare(kv, (0, 0, kv_len), &c.q[..nq * hd], &right));
        assert!(ok.passed && ok.detail.starts_with("x: passed, rel Frobenius"), "{ok:?}");
        let bad = OutputCheck::of("x", &rc.compare(kv, (0, 0, kv_len), &c.q[..nq * hd], &vec![bf16::NAN; nq * hd]));
        assert!(!bad.passed && bad.detail.contains("sequence 0, query 0"), "{bad:?}");
    }
}
