//! GQA attention: run on the GPU with fresh random inputs, NaN-poisoned outputs (and, for the
//! paged cache, NaN in every slot no sequence owns: a stray read poisons the result), and
//! compare with `reference::attention` sequence by sequence. Used by tests/attention.rs and
//! `warpcore check`.

use super::{compare, tolerance, CheckResult, Comparison, Rng, Tolerance};
use crate::kv_cache::{BlockTableView, KvCacheView, KvScales};
use crate::ops::attention::{attention, merge_states, AttentionConfig, AttentionKernel, AttentionPlan, KvInput, MLA_DECODE};
use crate::reference::attention::{self as reference, AttentionMask, AttentionShape};
use crate::{DType, Device, Result, TensorView, TensorViewMut};
use half::{bf16, f16};

/// One batch: per-sequence query and key counts, heads, mask options, K/V source.
#[derive(Clone, Debug)]
pub struct AttentionCase {
    /// Queries of each sequence `[num_seqs]` (the last q_len of its kv_len positions).
    pub q_lens: Vec<usize>,
    /// Keys of each sequence `[num_seqs]` (>= its q_len).
    pub kv_lens: Vec<usize>,
    /// Query heads (a multiple of num_kv_heads).
    pub num_q_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Elements per q and k head.
    pub head_dim: usize,
    /// Value head dim (= head_dim except 192/128, MLA prefill, and 576/512, MLA decode: V is
    /// the first 512 elements of K's rows, the latent cache).
    pub head_dim_v: usize,
    /// Bottom-right aligned causal mask.
    pub causal: bool,
    /// Sliding window: keys more than this many positions left of the query are masked.
    pub window_left: Option<u32>,
    /// Logit soft-capping `cap · tanh(s / cap)`.
    pub softcap: Option<f32>,
    /// Some(page_size): K/V in the paged cache (pages shuffled); None: contiguous varlen.
    pub page_size: Option<usize>,
    /// Override the plan's split-KV factor (exercises the split + merge path at any size).
    pub num_splits: Option<usize>,
    /// FP8 e4m3 paged cache with these (k_scale, v_scale): K/V are quantized on the host
    /// (stored = round(x / scale)) and the reference reads the dequantized values.
    pub fp8_scales: Option<(f32, f32)>,
    /// The kernel to plan for (`Auto`: the plan's choice).
    pub kernel: AttentionKernel,
    /// Queries are uniform in ±q_magnitude (1 by default; far from 1 it exercises a kernel's
    /// range handling, e.g. the Hopper kernel's f16 queries over an FP8 cache).
    pub q_magnitude: f32,
    /// Seed of q, k, v and the page order.
    pub seed: u64,
    /// The plan's `tma` (true by default): false sends every key tile of the wgmma prefill
    /// kernel by cp.async.
    pub tma: bool,
}

impl AttentionCase {
    /// The model shape (32 q / 8 kv heads, head_dim 128), causal, paged (page 16), for
    /// these per-sequence query and key counts; set other fields with struct update syntax.
    pub fn new(q_lens: Vec<usize>, kv_lens: Vec<usize>, seed: u64) -> Self {
        Self {
            q_lens,
            kv_lens,
            num_q_heads: 32,
            num_kv_heads: 8,
            head_dim: 128,
            head_dim_v: 128,
            causal: true,
            window_left: None,
            softcap: None,
            page_size: Some(16),
            num_splits: None,
            fp8_scales: None,
            kernel: AttentionKernel::Auto,
            q_magnitude: 1.0,
            seed,
            tma: true,
        }
    }

    fn describe(&self) -> String {
        format!(
            "q {:?} kv {:?} heads {}/{} d{}/{}{}{}{}{}{}",
            self.q_lens,
            self.kv_lens,
            self.num_q_heads,
            self.num_kv_heads,
            self.head_dim,
            self.head_dim_v,
            if self.causal { " causal" } else { "" },
            self.window_left.map_or(String::new(), |w| format!(" window {w}")),
            self.softcap.map_or(String::new(), |c| format!(" softcap {c}")),
            self.page_size.map_or(" contiguous".into(), |p| format!(" page {p}")),
            self.num_splits.map_or(String::new(), |s| format!(" splits {s}")),
        ) + &self.fp8_scales.map_or(String::new(), |(k, v)| format!(" e4m3 scales {k}/{v}"))
            + &if self.q_magnitude == 1.0 { String::new() } else { format!(" |q| < {:e}", self.q_magnitude) }
            + if self.tma { "" } else { " no-tma" }

    }
}

/// The log-sum-exp tolerance: f32 statistics over exp2/log2.
const LSE_TOL: Tolerance = Tolerance { atol: 2e-3, rtol: 1e-3, frobenius: 1e-3 };

/// Builds the paged cache: pages shuffled, unused slots NaN. `row`/`row_v`: elements per
/// slot of K/V. Returns (k_pages, v_pages, block_table [num_seqs, max_pages] with −1 past
/// each sequence, num_pages).
fn paged<T: DType>(rng: &mut Rng, ks: &[Vec<T>], vs: &[Vec<T>], kv_lens: &[usize], page: usize, row: usize, row_v: usize) -> (Vec<T>, Vec<T>, Vec<i32>, usize) {
    let pages_of: Vec<usize> = kv_lens.iter().map(|l| l.div_ceil(page)).collect();
    let max_pages = pages_of.iter().copied().max().unwrap_or(0).max(1);
    let num_pages = pages_of.iter().sum::<usize>() + 3; // spare pages nobody owns
    let mut order: Vec<usize> = (0..num_pages).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let mut kc = vec![T::NAN; num_pages * page * row];
    let mut vc = vec![T::NAN; num_pages * page * row_v];
    let mut table = vec![-1i32; kv_lens.len() * max_pages];
    let mut next = 0;
    for (s, &len) in kv_lens.iter().enumerate() {
        for pg in 0..pages_of[s] {
            let id = order[next];
            next += 1;
            table[s * max_pages + pg] = id as i32;
            for off in 0..page.min(len - pg * page) {
                let (key, slot) = (pg * page + off, id * page + off);
                kc[slot * row..][..row].copy_from_slice(&ks[s][key * row..][..row]);
                vc[slot * row_v..][..row_v].copy_from_slice(&vs[s][key * row_v..][..row_v]);
            }
        }
    }
    (kc, vc, table, num_pages)
}

/// `attention` against the reference, for one batch.
pub fn check_attention<T: DType>(dev: &Device, case: &AttentionCase) -> Result<CheckResult> {
    if case.fp8_scales.is_some() {
        return check_attention_kv::<T, crate::F8E4M3>(dev, case);
    }
    check_attention_kv::<T, T>(dev, case)
}

/// The op's outputs for one batch with K/V in the query dtype, as it wrote them (out, lse):
/// for comparisons between kernel paths that must agree bit for bit (the wgmma kernel's TMA
/// and cp.async tiles).
pub fn attention_outputs<T: DType>(dev: &Device, case: &AttentionCase) -> Result<(Vec<T>, Vec<f32>)> {
    let r = run_attention::<T, T>(dev, case)?;
    Ok((r.out, r.lse))
}

/// One batch's inputs (per sequence, as stored) and what the op made of them.
struct Run<T, C> {
    qs: Vec<Vec<T>>,
    ks: Vec<Vec<C>>,
    vs: Vec<Vec<C>>,
    plan: AttentionPlan,
    cfg: AttentionConfig,
    out: Vec<T>,
    lse: Vec<f32>,
}

fn check_attention_kv<T: DType, C: DType>(dev: &Device, case: &AttentionCase) -> Result<CheckResult> {
    let c = case;
    let (nq, nkv, hd, hdv) = (c.num_q_heads, c.num_kv_heads, c.head_dim, c.head_dim_v);
    let (k_scale, v_scale) = c.fp8_scales.unwrap_or((1.0, 1.0));
    let Run { qs, ks, vs, plan, cfg, out: got, lse: got_lse } = run_attention::<T, C>(dev, case)?;
    let mask = AttentionMask { scale: cfg.scale as f64, causal: c.causal, window_left: c.window_left.map(|w| w as usize), softcap: c.softcap.map(f64::from) };
    let (mut want, mut want_lse) = (Vec::new(), Vec::new());
    for s in 0..c.q_lens.len() {
        let shape = AttentionShape { q_len: c.q_lens[s], kv_len: c.kv_lens[s], num_q_heads: nq, num_kv_heads: nkv, head_dim: hd, head_dim_v: hdv };
        let (o, l) = reference::attention(&qs[s], &ks[s], &vs[s], shape, &mask, k_scale as f64, v_scale as f64);
        want.extend(o);
        want_lse.extend(l);
    }
    Ok(CheckResult {
        op: "attention",
        dtype: T::NAME,
        shape: format!("{} {}", c.describe(), if plan.kernel == AttentionKernel::Wgmma { "wgmma" } else { "mma.sync" }),
        comparisons: per_sequence(&c.q_lens, nq, hdv, (&got, &want), (&got_lse, &want_lse), tolerance::<T>()),
    })
}

/// out and lse compared sequence by sequence: one Frobenius norm over the whole batch is
/// dominated by its short sequences (|out| ≈ 0.58/√L for L keys of near-uniform attention), and
/// an error confined to a long one (its tail page, a split's remainder) passed beside them.
fn per_sequence<T: DType>(q_lens: &[usize], nq: usize, hdv: usize, (got, want): (&[T], &[f64]), (got_lse, want_lse): (&[f32], &[f64]), tol: Tolerance) -> Vec<Comparison> {
    let mut out = Vec::new();
    let mut t0 = 0;
    for (s, &l) in q_lens.iter().enumerate() {
        if l > 0 {
            // (names leak a few bytes per sequence checked: a check is a short-lived run)
            let name = |what: &str| -> &'static str { Box::leak(format!("{what} (sequence {s})").into_boxed_str()) };
            let (o, r) = (t0 * nq * hdv..(t0 + l) * nq * hdv, t0 * nq..(t0 + l) * nq);
            out.push(compare(name("out"), &got[o.clone()], &want[o], tol).in_rows(hdv));
            out.push(compare(name("lse"), &got_lse[r.clone()], &want_lse[r], LSE_TOL).in_rows(nq));
        }
        t0 += l;
    }
    out
}

fn run_attention<T: DType, C: DType>(dev: &Device, case: &AttentionCase) -> Result<Run<T, C>> {
    let c = case;
    let (nq, nkv, hd, hdv) = (c.num_q_heads, c.num_kv_heads, c.head_dim, c.head_dim_v);
    let (row, row_v) = (nkv * hd, nkv * hdv);
    let mut rng = Rng::new(c.seed);
    let (k_scale, v_scale) = c.fp8_scales.unwrap_or((1.0, 1.0));
    let qm = c.q_magnitude as f64;
    let qs: Vec<Vec<T>> = c.q_lens.iter().map(|&l| rng.vec(l * nq * hd, -qm, qm)).collect();
    // Stored values: for FP8 the quantized x / scale of x in [-1, 1).
    let ks: Vec<Vec<C>> = c.kv_lens.iter().map(|&l| rng.vec(l * row, -1.0 / k_scale as f64, 1.0 / k_scale as f64)).collect();
    let mla = (hd, hdv) == MLA_DECODE;
    let vs: Vec<Vec<C>> = if mla {
        ks.iter().map(|k| k.chunks(hd).flat_map(|r| r[..hdv].to_vec()).collect()).collect()
    } else {
        c.kv_lens.iter().map(|&l| rng.vec(l * row_v, -1.0 / v_scale as f64, 1.0 / v_scale as f64)).collect()
    };
    let cu = |lens: &[usize]| -> Vec<i32> { std::iter::once(0).chain(lens.iter().scan(0, |a, &l| { *a += l as i32; Some(*a) })).collect() };
    let total_q: usize = c.q_lens.iter().sum();

    let mut plan = AttentionPlan::with_kv::<C>(dev, &c.q_lens, &c.kv_lens, nq, nkv, hd, hdv, c.kernel)?;
    if let Some(s) = c.num_splits {
        plan.num_splits = s;
    }
    plan.tma = c.tma;
    let cfg = AttentionConfig { scale: 1.0 / (hd as f32).sqrt(), causal: c.causal, window_left: c.window_left, softcap: c.softcap };

    let q = dev.upload(&qs.concat())?;
    let cu_q = dev.upload(&cu(&c.q_lens))?;
    let mut out = dev.upload(&vec![T::NAN; total_q.max(1) * nq * hdv])?;
    let mut lse = dev.upload(&vec![f32::NAN; total_q.max(1) * nq])?;
    let mut ws = dev.zeros::<f32>(plan.workspace_len().max(1))?;
    let qv = TensorView::contiguous(q.as_view(), [total_q, nq, hd])?;
    let cuq = TensorView::contiguous(cu_q.as_view(), [c.q_lens.len() + 1])?;
    let mut ov = TensorViewMut::contiguous(out.as_view_mut(), [total_q, nq, hdv])?;
    let mut lv = TensorViewMut::contiguous(lse.as_view_mut(), [total_q, nq])?;
    let wlen = ws.len();
    let mut wv = TensorViewMut::contiguous(ws.as_view_mut(), [wlen])?;

    match c.page_size {
        None => {
            let k = dev.upload(&ks.concat())?;
            let v = dev.upload(&vs.concat())?;
            let cu_kv = dev.upload(&cu(&c.kv_lens))?;
            let total_kv: usize = c.kv_lens.iter().sum();
            let kt = TensorView::contiguous(k.as_view(), [total_kv, nkv, hd])?;
            let vt = if mla { kt.narrow(2, 0, hdv)? } else { TensorView::contiguous(v.as_view(), [total_kv, nkv, hdv])? };
            let ct = TensorView::contiguous(cu_kv.as_view(), [c.kv_lens.len() + 1])?;
            let kv = KvInput::Contiguous { k: &kt, v: &vt, cu_seqlens_kv: &ct };
            attention(dev, &qv, &cuq, kv, &plan, &cfg, &mut ov, Some(&mut lv), Some(&mut wv))?;
        }
        Some(page) => {
            let (kc, vc, table, num_pages) = paged(&mut rng, &ks, &vs, &c.kv_lens, page, row, row_v);
            let max_pages = table.len() / c.kv_lens.len().max(1);
            let (k, v) = (dev.upload(&kc)?, dev.upload(&vc)?);
            let bt = dev.upload(&table)?;
            let lens: Vec<i32> = c.kv_lens.iter().map(|&l| l as i32).collect();
            let sl = dev.upload(&lens)?;
            let k_pages = TensorView::contiguous(k.as_view(), [num_pages, page, nkv, hd])?;
            let mut cache = if mla {
                KvCacheView::latent(k_pages, hdv)?
            } else {
                KvCacheView::new(k_pages, TensorView::contiguous(v.as_view(), [num_pages, page, nkv, hdv])?)?
            };
            if c.fp8_scales.is_some() {
                cache = cache.with_scales(KvScales::new(k_scale, v_scale))?;
            }
            let table = BlockTableView::new(
                TensorView::contiguous(bt.as_view(), [c.kv_lens.len(), max_pages])?,
                TensorView::contiguous(sl.as_view(), [c.kv_lens.len()])?,
            )?;
            let kv = KvInput::Paged { cache: &cache, table: &table };
            attention(dev, &qv, &cuq, kv, &plan, &cfg, &mut ov, Some(&mut lv), Some(&mut wv))?;
        }
    }
    let (out, lse) = (dev.download(&out)?, dev.download(&lse)?);
    Ok(Run { qs, ks, vs, plan, cfg, out, lse })
}

/// `merge_states` against `reference::merge_states` (including rows where one side is empty).
pub fn check_merge_states<T: DType>(dev: &Device, rows: usize, head_dim: usize, seed: u64) -> Result<CheckResult> {
    let mut rng = Rng::new(seed);
    let a: Vec<T> = rng.vec(rows * head_dim, -1.0, 1.0);
    let b: Vec<T> = rng.vec(rows * head_dim, -1.0, 1.0);
    let side = |rng: &mut Rng| -> Vec<f32> { (0..rows).map(|r| if r % 7 == 3 { f32::NEG_INFINITY } else { rng.uniform(-5.0, 5.0) as f32 }).collect() };
    let (la, lb) = (side(&mut rng), side(&mut rng));
    let (da, dla, db, dlb) = (dev.upload(&a)?, dev.upload(&la)?, dev.upload(&b)?, dev.upload(&lb)?);
    let mut out = dev.upload(&vec![T::NAN; rows * head_dim])?;
    let mut lse = dev.upload(&vec![f32::NAN; rows])?;
    merge_states(
        dev,
        &TensorView::contiguous(da.as_view(), [rows, head_dim])?,
        &TensorView::contiguous(dla.as_view(), [rows])?,
        &TensorView::contiguous(db.as_view(), [rows, head_dim])?,
        &TensorView::contiguous(dlb.as_view(), [rows])?,
        &mut TensorViewMut::contiguous(out.as_view_mut(), [rows, head_dim])?,
        Some(&mut TensorViewMut::contiguous(lse.as_view_mut(), [rows])?),
    )?;
    let f = |x: &[T]| x.iter().map(|v| v.to_f64()).collect::<Vec<_>>();
    let g = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let (want, want_lse) = reference::merge_states(&f(&a), &g(&la), &f(&b), &g(&lb));
    Ok(CheckResult {
        op: "merge_states",
        dtype: T::NAME,
        shape: format!("[{rows}, {head_dim}]"),
        comparisons: vec![compare("out", &dev.download(&out)?, &want, tolerance::<T>()).in_rows(head_dim), compare("lse", &dev.download(&lse)?, &want_lse, LSE_TOL)],
    })
}

/// The cases `warpcore check` runs: decode, speculative decode, prefill, every head dim (MLA
/// decode's included).
pub fn check_all(dev: &Device) -> Result<Vec<CheckResult>> {
    let base = AttentionCase::new(vec![], vec![], 1);
    let cases = vec![
        AttentionCase { q_lens: vec![1; 4], kv_lens: vec![1, 17, 1000, 4097], ..base.clone() },
        AttentionCase { q_lens: vec![1], kv_lens: vec![20000], seed: 2, ..base.clone() },
        AttentionCase { q_lens: vec![4, 4], kv_lens: vec![63, 300], page_size: Some(64), seed: 3, ..base.clone() },
        AttentionCase { q_lens: vec![300, 17], kv_lens: vec![300, 100], page_size: None, seed: 4, ..base.clone() },
        // (|q| up to 60: logits of tens, so that the cap of 30 bends them; at |q| < 1 a kernel
        // ignoring the cap passed)
        AttentionCase { q_lens: vec![129], kv_lens: vec![129], window_left: Some(40), softcap: Some(30.0), q_magnitude: 60.0, seed: 5, ..base.clone() },
        AttentionCase { q_lens: vec![70], kv_lens: vec![200], num_q_heads: 8, num_kv_heads: 8, head_dim: 64, head_dim_v: 64, page_size: Some(1), seed: 6, ..base.clone() },
        AttentionCase { q_lens: vec![33], kv_lens: vec![90], num_q_heads: 16, num_kv_heads: 2, head_dim: 96, head_dim_v: 96, causal: false, seed: 7, ..base.clone() },
        AttentionCase { q_lens: vec![1, 40], kv_lens: vec![500, 40], num_q_heads: 8, num_kv_heads: 1, head_dim: 256, head_dim_v: 256, num_splits: Some(3), seed: 8, ..base.clone() },
        AttentionCase { q_lens: vec![100, 7], kv_lens: vec![100, 300], num_q_heads: 16, num_kv_heads: 16, head_dim: 192, head_dim_v: 128, page_size: None, seed: 14, ..base.clone() },
        AttentionCase { q_lens: vec![200, 1], kv_lens: vec![1000, 50], num_q_heads: 8, num_kv_heads: 2, head_dim: 64, head_dim_v: 64, num_splits: Some(3), seed: 15, ..base.clone() },
        AttentionCase { q_lens: vec![1; 3], kv_lens: vec![5, 700, 3000], fp8_scales: Some((0.02, 0.05)), seed: 12, ..base.clone() },
        AttentionCase { q_lens: vec![2, 2], kv_lens: vec![90, 33], num_q_heads: 16, num_kv_heads: 2, head_dim: 64, head_dim_v: 64, page_size: Some(32), fp8_scales: Some((1.0, 1.0)), seed: 13, ..base.clone() },
        // Prefill / append chunks over an FP8 cache (on Hopper the wgmma kernel at head dims 64
        // and 128, and the portable kernel's prefill configuration): a whole prompt next to a
        // chunk, page 1 at head_dim 64, and head_dim 256 with a window, a soft-cap and splits.
        AttentionCase { q_lens: vec![300, 17], kv_lens: vec![300, 100], fp8_scales: Some((0.02, 0.05)), seed: 21, ..base.clone() },
        AttentionCase { q_lens: vec![65], kv_lens: vec![200], num_q_heads: 16, num_kv_heads: 2, head_dim: 64, head_dim_v: 64, page_size: Some(1), fp8_scales: Some((1.0, 0.5)), seed: 22, ..base.clone() },
        AttentionCase { q_lens: vec![40, 70], kv_lens: vec![40, 500], num_q_heads: 8, num_kv_heads: 1, head_dim: 256, head_dim_v: 256, page_size: Some(64), window_left: Some(100), softcap: Some(30.0), num_splits: Some(2), fp8_scales: Some((0.5, 0.25)), seed: 23, ..base.clone() },
        // Queries far outside [-1, 1] over an FP8 cache: past f16's range (the Hopper kernel
        // scales bf16 queries into it; a soft-cap keeps the softmax smooth) and far below it.
        AttentionCase { q_lens: vec![130, 40], kv_lens: vec![600, 40], num_q_heads: 8, num_kv_heads: 2, softcap: Some(30.0), fp8_scales: Some((0.02, 0.05)), q_magnitude: 1e5, seed: 24, ..base.clone() },
        AttentionCase { q_lens: vec![33], kv_lens: vec![300], num_q_heads: 8, num_kv_heads: 2, head_dim: 64, head_dim_v: 64, fp8_scales: Some((0.02, 0.05)), q_magnitude: 1e-6, seed: 25, ..base.clone() },
        // MLA decode over the latent cache: 16 heads (tensor-parallel DeepSeek, the 16-row
        // configuration), 128 heads (the 64-row one), speculative decode, split-KV, contiguous.
        AttentionCase { q_lens: vec![1; 3], kv_lens: vec![1, 300, 2000], num_q_heads: 16, num_kv_heads: 1, head_dim: 576, head_dim_v: 512, page_size: Some(64), seed: 16, ..base.clone() },
        AttentionCase { q_lens: vec![1, 2], kv_lens: vec![500, 129], num_q_heads: 128, num_kv_heads: 1, head_dim: 576, head_dim_v: 512, num_splits: Some(3), seed: 17, ..base.clone() },
        AttentionCase { q_lens: vec![3], kv_lens: vec![40], num_q_heads: 16, num_kv_heads: 1, head_dim: 576, head_dim_v: 512, page_size: None, seed: 18, ..base.clone() },
        // An FP8 latent cache (one scale) on the portable kernel, at 16 and 128 heads.
        AttentionCase { q_lens: vec![1; 3], kv_lens: vec![40, 700, 1500], num_q_heads: 16, num_kv_heads: 1, head_dim: 576, head_dim_v: 512, page_size: Some(64), fp8_scales: Some((0.01, 0.01)), seed: 19, ..base.clone() },
        AttentionCase { q_lens: vec![1, 1], kv_lens: vec![300, 33], num_q_heads: 128, num_kv_heads: 1, head_dim: 576, head_dim_v: 512, page_size: Some(16), fp8_scales: Some((0.03, 0.03)), seed: 20, ..base.clone() },
    ];
    let mut out = Vec::new();
    for c in &cases {
        out.push(check_attention::<bf16>(dev, c)?);
        // (f16 queries stay within f16's range.)
        out.push(check_attention::<f16>(dev, &AttentionCase { seed: c.seed + 100, q_magnitude: c.q_magnitude.min(6e4), ..c.clone() })?);
        // Where the plan picks the wgmma kernel (Hopper prefill), the mma.sync kernel too.
        let (q, kv, heads, dims) = (&c.q_lens, &c.kv_lens, (c.num_q_heads, c.num_kv_heads), (c.head_dim, c.head_dim_v));
        let auto = match c.fp8_scales {
            Some(_) => AttentionPlan::with_kv::<crate::F8E4M3>(dev, q, kv, heads.0, heads.1, dims.0, dims.1, AttentionKernel::Auto)?,
            None => AttentionPlan::new(dev, q, kv, heads.0, heads.1, dims.0, dims.1)?,
        };
        if auto.kernel == AttentionKernel::Wgmma {
            out.push(check_attention::<bf16>(dev, &AttentionCase { kernel: AttentionKernel::MmaSync, seed: c.seed + 200, ..c.clone() })?);
            // And its key tiles all by cp.async (K/V in the query dtype: TMA otherwise).
            if c.fp8_scales.is_none() {
                out.push(check_attention::<bf16>(dev, &AttentionCase { tma: false, seed: c.seed + 300, ..c.clone() })?);
            }
        }
    }
    out.push(check_merge_states::<bf16>(dev, 1000, 128, 9)?);
    out.push(check_merge_states::<f32>(dev, 33, 64, 10)?);
    Ok(out)
}

/// Without a GPU: the reference's own invariants (GQA ratio 1 equals MHA with repeated heads;
/// merging the two halves of the keys equals the whole).
pub fn check_references() -> Vec<CheckResult> {
    let mut rng = Rng::new(11);
    let (ql, kl, nkv, g, hd) = (6, 40, 2, 4, 64);
    let q: Vec<f32> = rng.vec(ql * nkv * g * hd, -1.0, 1.0);
    let k: Vec<f32> = rng.vec(kl * nkv * hd, -1.0, 1.0);
    let v: Vec<f32> = rng.vec(kl * nkv * hd, -1.0, 1.0);
    let mask = AttentionMask { scale: 0.125, causal: false, window_left: None, softcap: None };
    let shape = |kv_len, nkvh| AttentionShape { q_len: ql, kv_len, num_q_heads: nkv * g, num_kv_heads: nkvh, head_dim: hd, head_dim_v: hd };
    let rep = |x: &[f32]| -> Vec<f32> { x.chunks(nkv * hd).flat_map(|tok| (0..nkv * g).flat_map(move |h| tok[(h / g) * hd..][..hd].to_vec())).collect() };
    let (gqa, _) = reference::attention(&q, &k, &v, shape(kl, nkv), &mask, 1.0, 1.0);
    let (mha, _) = reference::attention(&q, &rep(&k), &rep(&v), shape(kl, nkv * g), &mask, 1.0, 1.0);
    let half = 17 * nkv * hd;
    let (a, la) = reference::attention(&q, &k[..half], &v[..half], shape(17, nkv), &mask, 1.0, 1.0);
    let (b, lb) = reference::attention(&q, &k[half..], &v[half..], shape(kl - 17, nkv), &mask, 1.0, 1.0);
    let (merged, _) = reference::merge_states(&a, &la, &b, &lb);
    let as_f32 = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<_>>();
    let c1: Comparison = compare("GQA = MHA with repeated kv heads", &as_f32(&gqa), &mha, tolerance::<f32>());
    let c2 = compare("merge_states(two halves) = whole", &as_f32(&merged), &gqa, tolerance::<f32>());
    vec![CheckResult { op: "reference::attention", dtype: "f64", shape: format!("q {ql} kv {kl} heads {}/{nkv} d{hd}", nkv * g), comparisons: vec![c1, c2] }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    /// An error confined to the long sequence of a batch (its newest key dropped) fails the
    /// per-sequence comparison though a short sequence sits beside it (one batch-wide
    /// Frobenius norm passed it); the correct outputs pass.
    #[test]
    fn an_error_in_the_long_sequence_fails_beside_a_short_one() {
        let (nq, hd) = (4, 64);
        let mask = AttentionMask { scale: 1.0 / (hd as f64).sqrt(), causal: false, window_left: None, softcap: None };
        let mut rng = Rng::new(3);
        let lens = [1000usize, 15];
        let (mut want, mut want_lse, mut wrong, mut wrong_lse) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (s, &l) in lens.iter().enumerate() {
            let q: Vec<bf16> = rng.vec(nq * hd, -1.0, 1.0);
            let k: Vec<bf16> = rng.vec(l * nq * hd, -1.0, 1.0);
            let v: Vec<bf16> = rng.vec(l * nq * hd, -1.0, 1.0);
            let shape = |kv_len| AttentionShape { q_len: 1, kv_len, num_q_heads: nq, num_kv_heads: nq, head_dim: hd, head_dim_v: hd };
            let (o, lse) = reference::attention(&q, &k, &v, shape(l), &mask, 1.0, 1.0);
            let (wo, wl) = if s == 0 { reference::attention(&q, &k[..(l - 1) * nq * hd], &v[..(l - 1) * nq * hd], shape(l - 1), &mask, 1.0, 1.0) } else { (o.clone(), lse.clone()) };
            want.extend(o);
            want_lse.extend(lse);
            wrong.extend(wo);
            wrong_lse.extend(wl);
        }
        let as_got = |o: &[f64], l: &[f64]| (o.iter().map(|&x| bf16::from_f64(x)).collect::<Vec<_>>(), l.iter().map(|&x| x as f32).collect::<Vec<_>>());
        let (ok_o, ok_l) = as_got(&want, &want_lse);
        let right = per_sequence(&[1, 1], nq, hd, (&ok_o, &want), (&ok_l, &want_lse), tolerance::<bf16>());
        assert!(right.iter().all(Comparison::passed), "{right:?}");
        let (bad_o, bad_l) = as_got(&wrong, &wrong_lse);
        let caught = per_sequence(&[1, 1], nq, hd, (&bad_o, &want), (&bad_l, &want_lse), tolerance::<bf16>());
        assert!(!caught.iter().all(Comparison::passed), "the dropped key passed");
    }
}
