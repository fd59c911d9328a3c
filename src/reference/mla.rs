//! CPU oracle for multi-head latent attention (DeepSeek-V2/V3 MLA), in f64, in both forms:
//! the naive one (expand the latent into per-head keys and values, then ordinary attention)
//! and the absorbed one (fold `W_uk` into the query and `W_uv` after the softmax, attending
//! over the shared latent: what decode kernels do). They must agree; the test says so.
//!
//! Inputs come after the projections and RoPE: per token, `q_nope [num_heads, d_nope]`,
//! `q_pe [num_heads, d_rope]`, the latent `c_kv [kv_lora_rank]` (after its RMSNorm) and the
//! shared `k_pe [d_rope]`; `kv_b` is DeepSeek's `kv_b_proj.weight`, `[num_heads · (d_nope +
//! d_v), kv_lora_rank]`: per head, d_nope rows of `W_uk` then d_v rows of `W_uv`. Queries are
//! the last `q_len` of `kv_len` positions (bottom-right causal, as in reference::attention).

/// Sizes of one MLA layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlaShape {
    /// Queries: the last `q_len` positions.
    pub q_len: usize,
    /// Cached positions (latents): `0..kv_len`.
    pub kv_len: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Non-rotary part of each q/k head (DeepSeek-V3 `qk_nope_head_dim`: 128).
    pub d_nope: usize,
    /// Rotary part of each q/k head, shared `k_pe` (DeepSeek-V3 `qk_rope_head_dim`: 64).
    pub d_rope: usize,
    /// Elements per v head (DeepSeek-V3 `v_head_dim`: 128).
    pub d_v: usize,
    /// Width of the latent `c_kv` (DeepSeek-V3: 512).
    pub kv_lora_rank: usize,
}

impl MlaShape {
    fn check(&self, q_nope: &[f32], q_pe: &[f32], c_kv: &[f32], k_pe: &[f32], kv_b: &[f32]) {
        let (h, r) = (self.num_heads, self.kv_lora_rank);
        assert_eq!(q_nope.len(), self.q_len * h * self.d_nope, "q_nope [q_len, heads, d_nope]");
        assert_eq!(q_pe.len(), self.q_len * h * self.d_rope, "q_pe [q_len, heads, d_rope]");
        assert_eq!(c_kv.len(), self.kv_len * r, "c_kv [kv_len, kv_lora_rank]");
        assert_eq!(k_pe.len(), self.kv_len * self.d_rope, "k_pe [kv_len, d_rope]");
        assert_eq!(kv_b.len(), h * (self.d_nope + self.d_v) * r, "kv_b [heads · (d_nope + d_v), kv_lora_rank]");
    }
    /// Row `i` of head h's W_uk (i < d_nope) or W_uv (d_nope ≤ i) in kv_b.
    fn kv_b_row<'a>(&self, kv_b: &'a [f32], head: usize, i: usize) -> &'a [f32] {
        let r = self.kv_lora_rank;
        &kv_b[(head * (self.d_nope + self.d_v) + i) * r..][..r]
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Softmax-weighted sum over the visible keys of `scores` (causal: key j ≤ position), applied
/// to `rows(j)`; returns zeros when no key is visible.
fn attend(scores: &[f64], pos: i64, causal: bool, rows: impl Fn(usize) -> Vec<f64>, width: usize) -> Vec<f64> {
    let visible = |j: usize| !causal || (j as i64) <= pos;
    let max = scores.iter().enumerate().filter(|&(j, _)| visible(j)).map(|(_, &s)| s).fold(f64::NEG_INFINITY, f64::max);
    let mut out = vec![0.0; width];
    if max == f64::NEG_INFINITY {
        return out;
    }
    let sum: f64 = scores.iter().enumerate().filter(|&(j, _)| visible(j)).map(|(_, &s)| (s - max).exp()).sum();
    for (j, &s) in scores.iter().enumerate().filter(|&(j, _)| visible(j)) {
        let p = (s - max).exp() / sum;
        for (o, v) in out.iter_mut().zip(rows(j)) {
            *o += p * v;
        }
    }
    out
}

/// Naive MLA: k_h = [W_uk,h c_kv | k_pe], v_h = W_uv,h c_kv, then softmax(scale · q·k) v.
/// Returns `[q_len, num_heads, d_v]`.
#[allow(clippy::too_many_arguments)]
pub fn mla_naive(s: MlaShape, q_nope: &[f32], q_pe: &[f32], c_kv: &[f32], k_pe: &[f32], kv_b: &[f32], scale: f64, causal: bool) -> Vec<f64> {
    s.check(q_nope, q_pe, c_kv, k_pe, kv_b);
    let (h, r) = (s.num_heads, s.kv_lora_rank);
    let latent: Vec<Vec<f64>> = c_kv.chunks(r).map(f64s).collect();
    let mut out = Vec::with_capacity(s.q_len * h * s.d_v);
    for i in 0..s.q_len {
        let pos = s.kv_len as i64 - s.q_len as i64 + i as i64;
        for head in 0..h {
            // Per-head keys and values of every position, expanded from the latent.
            let expand = |j: usize, range: std::ops::Range<usize>| -> Vec<f64> {
                range.map(|row| dot(&f64s(s.kv_b_row(kv_b, head, row)), &latent[j])).collect()
            };
            let qn = f64s(&q_nope[(i * h + head) * s.d_nope..][..s.d_nope]);
            let qp = f64s(&q_pe[(i * h + head) * s.d_rope..][..s.d_rope]);
            let scores: Vec<f64> = (0..s.kv_len)
                .map(|j| (dot(&qn, &expand(j, 0..s.d_nope)) + dot(&qp, &f64s(&k_pe[j * s.d_rope..][..s.d_rope]))) * scale)
                .collect();
            out.extend(attend(&scores, pos, causal, |j| expand(j, s.d_nope..s.d_nope + s.d_v), s.d_v));
        }
    }
    out
}

/// Absorbed MLA: q̃ = W_ukᵀ q_nope (a kv_lora_rank vector per head), scores = scale · (q̃·c_kv +
/// q_pe·k_pe) over the shared latent, o_latent = Σ p c_kv, out = W_uv o_latent.
/// Returns `[q_len, num_heads, d_v]`.
#[allow(clippy::too_many_arguments)]
pub fn mla_absorbed(s: MlaShape, q_nope: &[f32], q_pe: &[f32], c_kv: &[f32], k_pe: &[f32], kv_b: &[f32], scale: f64, causal: bool) -> Vec<f64> {
    s.check(q_nope, q_pe, c_kv, k_pe, kv_b);
    let (h, r) = (s.num_heads, s.kv_lora_rank);
    let latent: Vec<Vec<f64>> = c_kv.chunks(r).map(f64s).collect();
    let mut out = Vec::with_capacity(s.q_len * h * s.d_v);
    for i in 0..s.q_len {
        let pos = s.kv_len as i64 - s.q_len as i64 + i as i64;
        for head in 0..h {
            let qn = &q_nope[(i * h + head) * s.d_nope..][..s.d_nope];
            let mut q_abs = vec![0.0; r];
            for (d, &qd) in qn.iter().enumerate() {
                for (a, &w) in q_abs.iter_mut().zip(s.kv_b_row(kv_b, head, d)) {
                    *a += qd as f64 * w as f64;
                }
            }
            let qp = f64s(&q_pe[(i * h + head) * s.d_rope..][..s.d_rope]);
            let scores: Vec<f64> =
                (0..s.kv_len).map(|j| (dot(&q_abs, &latent[j]) + dot(&qp, &f64s(&k_pe[j * s.d_rope..][..s.d_rope]))) * scale).collect();
            let o_latent = attend(&scores, pos, causal, |j| latent[j].clone(), r);
            out.extend((s.d_nope..s.d_nope + s.d_v).map(|row| dot(&f64s(s.kv_b_row(kv_b, head, row)), &o_latent)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Rng;

    #[test]
    fn absorbed_equals_naive() {
        for (q_len, kv_len, causal) in [(1, 9, true), (5, 5, true), (3, 7, false), (4, 2, true)] {
            let s = MlaShape { q_len, kv_len, num_heads: 3, d_nope: 8, d_rope: 4, d_v: 6, kv_lora_rank: 10 };
            let mut rng = Rng::new(q_len as u64 * 31 + kv_len as u64);
            let q_nope: Vec<f32> = rng.vec(q_len * 3 * 8, -1.0, 1.0);
            let q_pe: Vec<f32> = rng.vec(q_len * 3 * 4, -1.0, 1.0);
            let c_kv: Vec<f32> = rng.vec(kv_len * 10, -1.0, 1.0);
            let k_pe: Vec<f32> = rng.vec(kv_len * 4, -1.0, 1.0);
            let kv_b: Vec<f32> = rng.vec(3 * 14 * 10, -0.5, 0.5);
            let scale = 1.0 / 12f64.sqrt();
            let a = mla_naive(s, &q_nope, &q_pe, &c_kv, &k_pe, &kv_b, scale, causal);
            let b = mla_absorbed(s, &q_nope, &q_pe, &c_kv, &k_pe, &kv_b, scale, causal);
            assert_eq!(a.len(), q_len * 3 * 6);
            assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12), "{a:?}\n{b:?}");
            // The naive form is ordinary attention over the expanded heads: a query that sees one
            // key returns that key's value.
            if causal && q_len > kv_len {
                assert!(a[..3 * 6].iter().all(|&v| v == 0.0), "a query before every key sees nothing");
            }
        }
    }

    #[test]
    fn naive_mla_is_attention_over_expanded_heads() {
        use crate::reference::attention::{attention, AttentionMask, AttentionShape};
        let s = MlaShape { q_len: 3, kv_len: 6, num_heads: 2, d_nope: 4, d_rope: 2, d_v: 4, kv_lora_rank: 5 };
        let mut rng = Rng::new(77);
        let q_nope: Vec<f32> = rng.vec(3 * 2 * 4, -1.0, 1.0);
        let q_pe: Vec<f32> = rng.vec(3 * 2 * 2, -1.0, 1.0);
        let c_kv: Vec<f32> = rng.vec(6 * 5, -1.0, 1.0);
        let k_pe: Vec<f32> = rng.vec(6 * 2, -1.0, 1.0);
        let kv_b: Vec<f32> = rng.vec(2 * 8 * 5, -0.5, 0.5);
        // Expand by hand into q [3, 2, 6], k [6, 2, 6], v [6, 2, 4] and run reference::attention.
        let mut q: Vec<f32> = Vec::new();
        for t in 0..3 {
            for h in 0..2 {
                q.extend(&q_nope[(t * 2 + h) * 4..][..4]);
                q.extend(&q_pe[(t * 2 + h) * 2..][..2]);
            }
        }
        let (mut k, mut v): (Vec<f32>, Vec<f32>) = (Vec::new(), Vec::new());
        for j in 0..6 {
            for h in 0..2 {
                let row = |i: usize| -> f32 { s.kv_b_row(&kv_b, h, i).iter().zip(&c_kv[j * 5..][..5]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() as f32 };
                k.extend((0..4).map(row));
                k.extend(&k_pe[j * 2..][..2]);
                v.extend((4..8).map(row));
            }
        }
        let shape = AttentionShape { q_len: 3, kv_len: 6, num_q_heads: 2, num_kv_heads: 2, head_dim: 6, head_dim_v: 4 };
        let mask = AttentionMask { scale: 0.4, causal: true, window_left: None, softcap: None };
        let (want, _) = attention(&q, &k, &v, shape, &mask, 1.0, 1.0);
        let got = mla_naive(s, &q_nope, &q_pe, &c_kv, &k_pe, &kv_b, 0.4, true);
        // k and v were rounded to f32 when expanded by hand: agree to f32 precision.
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5), "{got:?}\n{want:?}");
    }
}
