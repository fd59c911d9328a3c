//! RoPE family: run each op on the GPU on fresh random inputs and compare with
//! `reference::rope`; for the appending ops also the whole (poisoned) cache with
//! `reference::kv_cache`. Used by tests/rope.rs and `warpcore check`.

use super::kv_cache::{cache_dtype_name, count_comparison, scales_for, CacheCase, HostCache};
use super::{compare, compare_exact, tolerance, CheckResult, Comparison, Rng};
use crate::ops::rms_norm::RmsNormConfig;
use crate::ops::rope::{self as ops, QkNorm, Qkv, RopeConfig, RopeScaling, RopeStyle, Yarn};
use crate::reference::rope as reference;
use crate::{DType, Device, IndexType, Result, TensorView, TensorViewMut, F8E4M3};
use cudarc::driver::CudaSlice;
use half::{bf16, f16};

/// How q, k and v are laid out in device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkvLayout {
    /// One buffer: per token the q heads, k heads, v heads, then `extra_heads` more (untouched).
    Fused {
        /// Heads after the v heads in each token row.
        extra_heads: usize,
    },
    /// Separate q, k, v buffers with `head_gap` elements between heads and `token_gap` between
    /// tokens (both untouched).
    Split {
        /// Elements after each head: the head stride is `head_dim + head_gap`.
        head_gap: usize,
        /// Extra elements per token: the token stride is `heads · head stride + token_gap`.
        token_gap: usize,
    },
}

/// One RoPE-family check: shapes, config, layout, positions.
#[derive(Clone, Copy, Debug)]
pub struct RopeCase {
    /// Tokens rotated.
    pub num_tokens: usize,
    /// q heads per token.
    pub num_q_heads: usize,
    /// k (and v) heads per token.
    pub num_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// The rotation (rotary part, theta, style, scaling).
    pub cfg: RopeConfig,
    /// How q, k and v sit in memory.
    pub layout: QkvLayout,
    /// Elements before the views in their buffers (odd: the element-wise path).
    pub offset: usize,
    /// i64 positions (else i32).
    pub pos64: bool,
    /// Positions are random in [0, max_position), in no particular order (ragged batches).
    pub max_position: i64,
    /// Seed of q, k, v and the positions.
    pub seed: u64,
}

impl RopeCase {
    /// A fused QKV buffer, i32 positions below 2^17.
    pub fn new(num_tokens: usize, num_q_heads: usize, num_kv_heads: usize, head_dim: usize, cfg: RopeConfig, seed: u64) -> Self {
        Self { num_tokens, num_q_heads, num_kv_heads, head_dim, cfg, layout: QkvLayout::Fused { extra_heads: 0 }, offset: 0, pos64: false, max_position: 1 << 17, seed }
    }
    fn describe(&self) -> String {
        let c = &self.cfg;
        format!(
            "tokens {} heads {}+{} head_dim {} rot {}@{} {:?} {} {:?}{}{} pos<{}",
            self.num_tokens,
            self.num_q_heads,
            self.num_kv_heads,
            self.head_dim,
            c.rotary_dim,
            c.rotary_offset,
            c.style,
            scaling_name(&c.scaling),
            self.layout,
            if self.offset > 0 { format!(" offset {}", self.offset) } else { String::new() },
            if self.pos64 { " i64" } else { "" },
            self.max_position
        )
    }
}

fn scaling_name(s: &RopeScaling) -> &'static str {
    match s {
        RopeScaling::None => "plain",
        RopeScaling::Linear { .. } => "linear",
        RopeScaling::DynamicNtk { .. } => "dynamic-ntk",
        RopeScaling::Llama3 { .. } => "llama3",
        RopeScaling::Yarn(_) => "yarn",
    }
}

/// Where q (0), k (1) or v (2) sits: buffer, first element, token and head strides, heads.
#[derive(Clone, Copy, Debug)]
struct Part {
    buf: usize,
    base: usize,
    ts: usize,
    hs: usize,
    heads: usize,
}

struct Host<T> {
    bufs: Vec<Vec<T>>,
    parts: [Part; 3],
    head_dim: usize,
    num_tokens: usize,
}

impl<T: DType> Host<T> {
    fn new(c: &RopeCase, rng: &mut Rng) -> Self {
        let (nq, nk, hd, nt) = (c.num_q_heads, c.num_kv_heads, c.head_dim, c.num_tokens);
        const TAIL: usize = 7;
        let (parts, lens) = match c.layout {
            QkvLayout::Fused { extra_heads } => {
                let row = (nq + 2 * nk + extra_heads) * hd;
                let part = |first_head: usize, heads| Part { buf: 0, base: c.offset + first_head * hd, ts: row, hs: hd, heads };
                ([part(0, nq), part(nq, nk), part(nq + nk, nk)], vec![c.offset + nt * row + TAIL])
            }
            QkvLayout::Split { head_gap, token_gap } => {
                let part = |buf, heads: usize| {
                    let hs = hd + head_gap;
                    Part { buf, base: c.offset, ts: heads * hs + token_gap, hs, heads }
                };
                let parts = [part(0, nq), part(1, nk), part(2, nk)];
                (parts, parts.iter().map(|p| c.offset + nt * p.ts + TAIL).collect())
            }
        };
        let bufs = lens.into_iter().map(|n| rng.vec(n, -2.0, 2.0)).collect();
        Self { bufs, parts, head_dim: hd, num_tokens: nt }
    }

    fn index(&self, p: usize, t: usize, h: usize, e: usize) -> (usize, usize) {
        let q = self.parts[p];
        (q.buf, q.base + t * q.ts + h * q.hs + e)
    }

    /// Part `p` of `bufs` as dense `[num_tokens, heads, head_dim]`.
    fn dense(&self, bufs: &[Vec<T>], p: usize) -> Vec<T> {
        let heads = self.parts[p].heads;
        let mut out = Vec::with_capacity(self.num_tokens * heads * self.head_dim);
        for t in 0..self.num_tokens {
            for h in 0..heads {
                for e in 0..self.head_dim {
                    let (b, i) = self.index(p, t, h, e);
                    out.push(bufs[b][i]);
                }
            }
        }
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Rope,
    QkNormRope { gemma: bool },
}

/// Builds the op's heads argument from the device buffers and calls `f` with it.
fn with_qkv<T: DType, R>(c: &RopeCase, host: &Host<T>, dbufs: &mut [CudaSlice<T>], need_v: bool, f: impl FnOnce(Qkv<'_, '_, T>) -> Result<R>) -> Result<R> {
    let (nt, nq, nk, hd) = (c.num_tokens, c.num_q_heads, c.num_kv_heads, c.head_dim);
    let [pq, pk, pv] = host.parts;
    match dbufs {
        [buf] => {
            // Non-appending ops see q + k heads, or (odd seeds) the v heads too (left alone).
            let heads = if need_v || c.seed % 2 == 1 { nq + 2 * nk } else { nq + nk };
            let mut view = TensorViewMut::new(buf.slice_mut(pq.base..), [nt, heads, hd], [pq.ts, pq.hs, 1])?;
            f(Qkv::fused(&mut view, nq, nk))
        }
        [qb, kb, vb] => {
            let mut q = TensorViewMut::new(qb.slice_mut(pq.base..), [nt, nq, hd], [pq.ts, pq.hs, 1])?;
            let mut k = TensorViewMut::new(kb.slice_mut(pk.base..), [nt, nk, hd], [pk.ts, pk.hs, 1])?;
            let v = TensorView::new(vb.slice(pv.base..), [nt, nk, hd], [pv.ts, pv.hs, 1])?;
            f(if need_v { Qkv::split_with_v(&mut q, &mut k, &v) } else { Qkv::split(&mut q, &mut k) })
        }
        _ => unreachable!("one fused buffer or three split ones"),
    }
}

fn run<T: DType, C: DType, P: IndexType, S: IndexType>(dev: &Device, c: &RopeCase, op: Op, cache: Option<&CacheCase>) -> Result<CheckResult> {
    let mut rng = Rng::new(c.seed);
    let host = Host::<T>::new(c, &mut rng);
    let (nt, hd, cfg) = (c.num_tokens, c.head_dim, c.cfg);
    let positions: Vec<i64> = (0..nt).map(|_| (rng.next_u64() % c.max_position.max(1) as u64) as i64).collect();
    let pos_p: Vec<P> = positions.iter().map(|&p| P::from_i64(p).expect("case positions fit the index type")).collect();
    let gemma = matches!(op, Op::QkNormRope { gemma: true });
    let norm_cfg = if gemma { RmsNormConfig::gemma(1e-6) } else { RmsNormConfig::new(1e-6) };
    let (wlo, whi) = if gemma { (-0.5, 0.5) } else { (0.5, 1.5) };
    let (qw_host, kw_host): (Vec<T>, Vec<T>) = (rng.vec(hd, wlo, whi), rng.vec(hd, wlo, whi));

    let (q_in, k_in, v_in) = (host.dense(&host.bufs, 0), host.dense(&host.bufs, 1), host.dense(&host.bufs, 2));
    let (want_q, want_k) = match op {
        Op::Rope => reference::rope(&q_in, &k_in, hd, &positions, &cfg),
        Op::QkNormRope { .. } => reference::qk_norm_rope(&q_in, &k_in, &positions, &qw_host, &kw_host, norm_cfg, &cfg),
    };

    let mut dbufs: Vec<CudaSlice<T>> = host.bufs.iter().map(|b| dev.upload(b)).collect::<Result<_>>()?;
    let dpos = dev.upload(&pos_p)?;
    let (dqw, dkw) = (dev.upload(&qw_host)?, dev.upload(&kw_host)?);
    let pos = TensorView::contiguous(dpos.as_view(), [nt])?;
    let (qw, kw) = (TensorView::contiguous(dqw.as_view(), [hd])?, TensorView::contiguous(dkw.as_view(), [hd])?);
    let norm = QkNorm { q_weight: &qw, k_weight: &kw, cfg: norm_cfg };

    let mut comparisons = Vec::new();
    let mut dtype = T::NAME;
    let mut shape = c.describe();
    match cache {
        None => with_qkv(c, &host, &mut dbufs, false, |qkv| match op {
            Op::Rope => ops::rope(dev, qkv, &pos, &cfg),
            Op::QkNormRope { .. } => ops::qk_norm_rope(dev, qkv, &pos, &cfg, norm),
        })?,
        Some(cc) => {
            let slots = cc.slots(nt);
            let slots_s: Vec<S> = slots.iter().map(|&s| S::from_i64(s).expect("case slots fit the index type")).collect();
            let dslots = dev.upload(&slots_s)?;
            let sv = TensorView::contiguous(dslots.as_view(), [nt])?;
            let amax = |x: &[f64]| x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let scales = scales_for::<C>(amax(&want_k), amax(&v_in.iter().map(|v| v.to_f64()).collect::<Vec<_>>()));
            let hc = HostCache::<C>::new(cc, c.num_kv_heads, hd)?;
            let expected_oob = slots.iter().filter(|&&s| s >= hc.layout.num_slots() as i64).count();
            let got_cache = hc.run(dev, scales, expected_oob, |kv| {
                with_qkv(c, &host, &mut dbufs, true, |qkv| match op {
                    Op::Rope => ops::rope_append_kv(dev, qkv, &pos, &cfg, &sv, kv),
                    Op::QkNormRope { .. } => ops::qk_norm_rope_append_kv(dev, qkv, &pos, &cfg, norm, &sv, kv),
                })
            })?;
            // The cache holds k exactly as the op stored it in k (rotated, rounded to T).
            let got_bufs: Vec<Vec<T>> = dbufs.iter().map(|b| dev.download(b)).collect::<Result<_>>()?;
            let k_out = host.dense(&got_bufs, 1);
            comparisons.extend(hc.compare(&got_cache, &k_out, &v_in, &slots, scales));
            if C::TAG == F8E4M3::TAG {
                comparisons.push(hc.compare_fp8_k(&got_cache.0, &want_k, &slots, scales.k));
            }
            dtype = cache_dtype_name::<T, C>();
            shape = format!("{shape}; {}", cc.describe());
        }
    }
    let got_bufs: Vec<Vec<T>> = dbufs.iter().map(|b| dev.download(b)).collect::<Result<_>>()?;
    comparisons.splice(0..0, compare_heads(c, &host, &got_bufs, op, &want_q, &want_k));
    let name = match (op, cache.is_some()) {
        (Op::Rope, false) => "rope",
        (Op::Rope, true) => "rope_append_kv",
        (Op::QkNormRope { .. }, false) => "qk_norm_rope",
        (Op::QkNormRope { .. }, true) => "qk_norm_rope_append_kv",
    };
    Ok(CheckResult { op: name, dtype, shape: if gemma { format!("{shape} gemma") } else { shape }, comparisons })
}

/// q and k's written elements against the reference; every other element of the buffers
/// (the unrotated part of each head for rope, v, extra heads, gaps) bit-identical to the input.
fn compare_heads<T: DType>(c: &RopeCase, host: &Host<T>, got: &[Vec<T>], op: Op, want_q: &[f64], want_k: &[f64]) -> Vec<Comparison> {
    let written = match op {
        Op::Rope => c.cfg.rotary_offset..c.cfg.rotary_offset + c.cfg.rotary_dim,
        Op::QkNormRope { .. } => 0..c.head_dim,
    };
    let mut mask: Vec<Vec<bool>> = host.bufs.iter().map(|b| vec![false; b.len()]).collect();
    let mut out = Vec::new();
    for (p, (what, want)) in [("q", want_q), ("k", want_k)].into_iter().enumerate() {
        let (mut g, mut w) = (Vec::new(), Vec::new());
        for t in 0..c.num_tokens {
            for h in 0..host.parts[p].heads {
                for e in written.clone() {
                    let (b, i) = host.index(p, t, h, e);
                    mask[b][i] = true;
                    g.push(got[b][i]);
                    w.push(want[(t * host.parts[p].heads + h) * c.head_dim + e]);
                }
            }
        }
        out.push(compare(what, &g, &w, tolerance::<T>()));
    }
    let rest = |bufs: &[Vec<T>]| -> Vec<T> {
        bufs.iter().zip(&mask).flat_map(|(b, m)| b.iter().zip(m).filter(|(_, &m)| !m).map(|(v, _)| *v)).collect()
    };
    out.push(compare_exact("everything else (unrotated parts, v, other heads, gaps) untouched", &rest(got), &rest(&host.bufs)));
    out
}

fn by_index_types<T: DType, C: DType>(dev: &Device, c: &RopeCase, op: Op, cache: Option<&CacheCase>) -> Result<CheckResult> {
    match (c.pos64, cache.is_some_and(|k| k.slots64)) {
        (false, false) => run::<T, C, i32, i32>(dev, c, op, cache),
        (false, true) => run::<T, C, i32, i64>(dev, c, op, cache),
        (true, false) => run::<T, C, i64, i32>(dev, c, op, cache),
        (true, true) => run::<T, C, i64, i64>(dev, c, op, cache),
    }
}

/// `rope` against the reference.
pub fn check_rope<T: DType>(dev: &Device, case: &RopeCase) -> Result<CheckResult> {
    by_index_types::<T, T>(dev, case, Op::Rope, None)
}

/// `qk_norm_rope` against the reference (`gemma`: weights used as `1 + weight`).
pub fn check_qk_norm_rope<T: DType>(dev: &Device, case: &RopeCase, gemma: bool) -> Result<CheckResult> {
    by_index_types::<T, T>(dev, case, Op::QkNormRope { gemma }, None)
}

/// `rope_append_kv` against the reference: q and k as `rope`, the cache bit-exact against
/// appending the k the op stored (the fused op equals rope then append_kv).
pub fn check_rope_append_kv<T: DType, C: DType>(dev: &Device, case: &RopeCase, cache: &CacheCase) -> Result<CheckResult> {
    by_index_types::<T, C>(dev, case, Op::Rope, Some(cache))
}

/// `qk_norm_rope_append_kv` against the reference, as `check_rope_append_kv`.
pub fn check_qk_norm_rope_append_kv<T: DType, C: DType>(dev: &Device, case: &RopeCase, cache: &CacheCase, gemma: bool) -> Result<CheckResult> {
    by_index_types::<T, C>(dev, case, Op::QkNormRope { gemma }, Some(cache))
}

/// Configurations of real models (and the corner cases) the checks and tests use.
pub fn model_configs() -> Vec<(&'static str, usize, RopeConfig)> {
    let llama3 = RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_positions: 8192 };
    vec![
        ("llama-3.1", 128, RopeConfig::new(128, 500000.0).with_scaling(llama3)),
        ("qwen3", 128, RopeConfig::new(128, 1e6)),
        ("deepseek-v3 q head nope+rope", 192, RopeConfig::new(64, 10000.0).with_offset(128).with_style(RopeStyle::GptJ).with_scaling(RopeScaling::Yarn(Yarn::deepseek_v3()))),
        ("qwen3-next partial", 256, RopeConfig::new(64, 1e7)),
        ("gpt-j", 256, RopeConfig::new(64, 10000.0).with_style(RopeStyle::GptJ)),
        ("phi-2 partial 32/80", 80, RopeConfig::new(32, 10000.0)),
        ("neox-20b partial 24/96", 96, RopeConfig::new(24, 10000.0)),
        ("dynamic ntk", 64, RopeConfig::new(64, 10000.0).with_scaling(RopeScaling::DynamicNtk { factor: 2.0, original_max_positions: 4096, seq_len: 20000 })),
        ("linear", 96, RopeConfig::new(96, 10000.0).with_scaling(RopeScaling::Linear { factor: 4.0 })),
        ("yarn qwen", 128, RopeConfig::new(128, 1e6).with_scaling(RopeScaling::Yarn(Yarn::new(4.0, 32768)))),
    ]
}

/// The cases `warpcore check` runs: every op, dtype and model config, plus awkward layouts.
pub fn check_all(dev: &Device) -> Result<Vec<CheckResult>> {
    let mut out = Vec::new();
    fn rope_cases(out: &mut Vec<CheckResult>, dev: &Device) -> Result<()> {
        fn per_dtype<T: DType>(dev: &Device, out: &mut Vec<CheckResult>) -> Result<()> {
            for (i, (_, hd, cfg)) in model_configs().into_iter().enumerate() {
                let seed = 100 + i as u64;
                out.push(check_rope::<T>(dev, &RopeCase::new(37, 8, 2, hd, cfg, seed))?);
                let split = RopeCase { layout: QkvLayout::Split { head_gap: 8, token_gap: 5 }, offset: 1, pos64: true, max_position: 1 << 32, ..RopeCase::new(9, 4, 1, hd, cfg, seed) };
                out.push(check_rope::<T>(dev, &split)?);
            }
            Ok(())
        }
        per_dtype::<bf16>(dev, out)?;
        per_dtype::<f16>(dev, out)?;
        per_dtype::<f32>(dev, out)
    }
    rope_cases(&mut out, dev)?;
    for (case, gemma) in qk_norm_cases() {
        out.push(check_qk_norm_rope::<bf16>(dev, &case, gemma)?);
        out.push(check_qk_norm_rope::<f32>(dev, &case, gemma)?);
    }
    for (case, cc) in append_cases() {
        out.push(check_rope_append_kv::<bf16, bf16>(dev, &case, &cc)?);
        out.push(check_rope_append_kv::<bf16, F8E4M3>(dev, &case, &cc)?);
        out.push(check_rope_append_kv::<f16, f16>(dev, &case, &cc)?);
        out.push(check_qk_norm_rope_append_kv::<bf16, bf16>(dev, &case, &cc, false)?);
        out.push(check_qk_norm_rope_append_kv::<f16, F8E4M3>(dev, &case, &cc, true)?);
    }
    Ok(out)
}

/// `check_all`'s qk_norm_rope cases (with `gemma`): Qwen3, Qwen3-Next's partial rotary with
/// Gemma-style weights, and a split layout with GPT-J pairs.
fn qk_norm_cases() -> Vec<(RopeCase, bool)> {
    let qwen3 = RopeConfig::new(128, 1e6);
    let next = RopeConfig::new(64, 1e7);
    let gptj64 = RopeConfig::new(64, 1e6).with_style(RopeStyle::GptJ);
    vec![
        (RopeCase::new(65, 32, 8, 128, qwen3, 1), false),
        (RopeCase::new(7, 16, 2, 256, next, 2), true),
        (RopeCase { layout: QkvLayout::Split { head_gap: 3, token_gap: 1 }, offset: 1, ..RopeCase::new(5, 3, 1, 64, gptj64, 3) }, false),
    ]
}

/// `check_all`'s fused-append cases: a prefill-sized batch with padding and out-of-range slots,
/// and an odd split layout with partial rotary, padded pages and i64 slots.
fn append_cases() -> Vec<(RopeCase, CacheCase)> {
    let cache = CacheCase { padding: 4, out_of_range: 5, ..CacheCase::for_tokens(100, 16, 4) };
    let big = RopeCase::new(100, 32, 8, 128, RopeConfig::new(128, 1e6), 4);
    let odd = RopeCase { layout: QkvLayout::Split { head_gap: 2, token_gap: 3 }, offset: 1, ..RopeCase::new(33, 4, 2, 80, RopeConfig::new(32, 1e4), 5) };
    let odd_cache = CacheCase { page_pad: 3, slots64: true, out_of_range: 2, ..CacheCase::for_tokens(33, 1, 5) };
    vec![(big, cache), (odd, odd_cache)]
}

/// Without a GPU: the reference's invariants at model configs — each pair keeps its norm (times
/// the attention factor), position 0 is the identity, and (unscaled attention factor) the
/// q·k product depends only on the relative position.
pub fn check_references() -> Vec<CheckResult> {
    let mut out = Vec::new();
    for (name, hd, cfg) in model_configs() {
        let mut rng = Rng::new(hd as u64);
        let (inv, af) = (cfg.inv_freq(), cfg.attention_factor());
        let x: Vec<f64> = (0..hd).map(|_| rng.uniform(-2.0, 2.0)).collect();
        let y: Vec<f64> = (0..hd).map(|_| rng.uniform(-2.0, 2.0)).collect();
        let rot = |v: &[f64], p: i64| {
            let mut v = v.to_vec();
            reference::rotate_head(&mut v, p, &inv, af, &cfg);
            v
        };
        let half = cfg.rotary_dim / 2;
        let pair = |v: &[f64], i: usize| match cfg.style {
            RopeStyle::NeoX => v[cfg.rotary_offset + i].hypot(v[cfg.rotary_offset + half + i]),
            RopeStyle::GptJ => v[cfg.rotary_offset + 2 * i].hypot(v[cfg.rotary_offset + 2 * i + 1]),
        };
        let moved = rot(&x, 123_457);
        let norms_after: Vec<f32> = (0..half).map(|i| pair(&moved, i) as f32).collect();
        let norms_want: Vec<f64> = (0..half).map(|i| af * pair(&x, i)).collect();
        let at_zero: Vec<f32> = rot(&x, 0).iter().map(|&v| v as f32).collect();
        let scaled: Vec<f64> = x.iter().enumerate().map(|(e, v)| if (cfg.rotary_offset..cfg.rotary_offset + cfg.rotary_dim).contains(&e) { af * v } else { *v }).collect();
        let dot = |m: i64, n: i64| rot(&x, m).iter().zip(rot(&y, n)).map(|(a, b)| a * b).sum::<f64>() / (af * af);
        let shifted: Vec<f32> = [(9i64, 2i64), (4096, 17), (0, 70000)].iter().map(|&(m, n)| dot(m + 100_003, n + 100_003) as f32).collect();
        let direct: Vec<f64> = [(9i64, 2i64), (4096, 17), (0, 70000)].iter().map(|&(m, n)| dot(m, n)).collect();
        out.push(CheckResult {
            op: "reference::rope",
            dtype: "f64",
            shape: format!("{name}: head_dim {hd}, rotary {}@{}", cfg.rotary_dim, cfg.rotary_offset),
            comparisons: vec![
                compare("pair norms preserved (x attention factor)", &norms_after, &norms_want, tolerance::<f32>()),
                compare("position 0 = identity (x attention factor)", &at_zero, &scaled, tolerance::<f32>()),
                compare("<rope(q, m), rope(k, n)> depends on m - n only", &shifted, &direct, tolerance::<f32>()),
                count_comparison("rotary_dim / 2 frequencies", inv.len() as u64, half as u64),
            ],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A perfect kernel on the host: the reference written into the buffers, rounded to T.
    fn apply<T: DType>(c: &RopeCase, host: &Host<T>, op: Op, want: [&[f64]; 2]) -> Vec<Vec<T>> {
        let written = match op {
            Op::Rope => c.cfg.rotary_offset..c.cfg.rotary_offset + c.cfg.rotary_dim,
            Op::QkNormRope { .. } => 0..c.head_dim,
        };
        let mut bufs = host.bufs.clone();
        for (p, w) in want.iter().enumerate() {
            for t in 0..c.num_tokens {
                for h in 0..host.parts[p].heads {
                    for e in written.clone() {
                        let (b, i) = host.index(p, t, h, e);
                        bufs[b][i] = T::from_f64(w[(t * host.parts[p].heads + h) * c.head_dim + e]);
                    }
                }
            }
        }
        bufs
    }

    /// `warpcore check` runs these on a GPU only: an invalid one would stop the whole family
    /// there (the reference panicked on a rotary part wider than the head, never run before
    /// the CLI ran under host emulation).
    #[test]
    fn every_check_all_case_is_a_valid_configuration() {
        let mut cases: Vec<(usize, RopeConfig)> = model_configs().into_iter().map(|(_, hd, cfg)| (hd, cfg)).collect();
        cases.extend(qk_norm_cases().iter().map(|(c, _)| (c.head_dim, c.cfg)));
        cases.extend(append_cases().iter().map(|(c, _)| (c.head_dim, c.cfg)));
        for (hd, cfg) in cases {
            cfg.validate("rope", hd).unwrap_or_else(|e| panic!("head_dim {hd}, {cfg:?}: {e}"));
        }
    }

    #[test]
    fn the_checker_accepts_a_correct_result_and_catches_wrong_and_stray_writes() {
        let cfg = RopeConfig::new(32, 1e4).with_offset(16).with_style(RopeStyle::GptJ);
        for layout in [QkvLayout::Fused { extra_heads: 2 }, QkvLayout::Split { head_gap: 3, token_gap: 5 }] {
            for op in [Op::Rope, Op::QkNormRope { gemma: false }] {
                let c = RopeCase { layout, offset: 1, ..RopeCase::new(5, 4, 2, 80, cfg, 3) };
                let host = Host::<bf16>::new(&c, &mut Rng::new(1));
                let (q, k) = (host.dense(&host.bufs, 0), host.dense(&host.bufs, 1));
                let pos = [3i64, 9, 0, 70000, 12];
                let (wq, wk) = match op {
                    Op::Rope => reference::rope(&q, &k, 80, &pos, &cfg),
                    Op::QkNormRope { .. } => {
                        let w = vec![bf16::ONE; 80];
                        reference::qk_norm_rope(&q, &k, &pos, &w, &w, RmsNormConfig::new(1e-6), &cfg)
                    }
                };
                let good = apply(&c, &host, op, [&wq, &wk]);
                let passed = |bufs: &[Vec<bf16>]| compare_heads(&c, &host, bufs, op, &wq, &wk).iter().map(|x| x.passed()).collect::<Vec<_>>();
                assert_eq!(passed(&good), [true, true, true], "{layout:?} {op:?}");
                // A write to v (part 2) is a stray write.
                let mut bad = good.clone();
                let (b, i) = host.index(2, 4, 1, 79);
                bad[b][i] = bf16::from_f32(7.0);
                assert_eq!(passed(&bad), [true, true, false]);
                // A k element left as it was (not rotated / normalised) is a wrong result.
                let mut bad = good.clone();
                let (b, i) = host.index(1, 3, 1, 17); // token 3: position 70000
                bad[b][i] = host.bufs[b][i];
                assert_eq!(passed(&bad), [true, false, true]);
                // A stray write into a gap or an unrotated element.
                let mut bad = good.clone();
                let e = if op == Op::Rope { 3 } else { 0 };
                let (b, i) = host.index(0, 0, 0, e);
                if op == Op::Rope {
                    bad[b][i] = bf16::from_f32(-9.0);
                    assert_eq!(passed(&bad), [true, true, false]);
                }
                let last = bad[b].len() - 1;
                bad[b][last] = bf16::from_f32(5.0); // the tail after the last token
                assert!(!passed(&bad)[2]);
            }
        }
    }

    #[test]
    fn host_layouts_place_q_k_v_where_the_views_say() {
        let c = RopeCase { layout: QkvLayout::Split { head_gap: 3, token_gap: 5 }, offset: 2, ..RopeCase::new(3, 4, 2, 16, RopeConfig::new(16, 1e4), 1) };
        let host = Host::<f32>::new(&c, &mut Rng::new(2));
        let p = host.parts[1];
        assert_eq!((p.buf, p.base, p.hs, p.ts, p.heads), (1, 2, 19, 2 * 19 + 5, 2));
        let c = RopeCase { layout: QkvLayout::Fused { extra_heads: 1 }, ..c };
        let host = Host::<f32>::new(&c, &mut Rng::new(2));
        let [q, k, v] = host.parts;
        assert_eq!((q.base, k.base, v.base, v.ts), (2, 2 + 4 * 16, 2 + 6 * 16, (4 + 4 + 1) * 16));
        assert_eq!(host.bufs[0].len(), 2 + 3 * 9 * 16 + 7);
    }
}
