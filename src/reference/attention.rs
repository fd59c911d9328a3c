//! CPU oracle for GQA attention, in f64 on inputs already in the kernels' dtypes.
//!
//! One sequence at a time: queries are the last `q_len` positions of a sequence of `kv_len`
//! keys (bottom-right aligned), so query i sits at position `kv_len − q_len + i`. Query head h
//! reads kv head `h / (num_q_heads / num_kv_heads)`.
//!
//! Mask for query position p and key j: causal → j ≤ p; window_left w → j ≥ p − w. A row that
//! sees no key returns zeros and log-sum-exp −∞ (FlashAttention's convention).

use crate::DType;

/// What the attention ops compute, besides the inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionMask {
    /// Softmax scale applied to q·k (usually 1/√head_dim).
    pub scale: f64,
    /// Bottom-right aligned causal mask.
    pub causal: bool,
    /// Keys more than this many positions left of the query are masked (sliding window).
    pub window_left: Option<usize>,
    /// Logit soft-capping: s → cap · tanh(s / cap), applied to the scaled score.
    pub softcap: Option<f64>,
}

impl AttentionMask {
    /// Whether query position `pos` (may be negative: no key visible) sees key `j`.
    pub fn allows(&self, pos: i64, j: i64) -> bool {
        (!self.causal || j <= pos) && self.window_left.is_none_or(|w| j >= pos - w as i64)
    }
}

/// Shapes of one sequence's attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Queries: the sequence's last `q_len` positions.
    pub q_len: usize,
    /// Keys and values: positions `0..kv_len`.
    pub kv_len: usize,
    /// Query heads (a multiple of `num_kv_heads`).
    pub num_q_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Elements per q and k head.
    pub head_dim: usize,
    /// Elements per v head (and output head).
    pub head_dim_v: usize,
}

/// Attention for one sequence. q: `[q_len, num_q_heads, head_dim]`, k: `[kv_len,
/// num_kv_heads, head_dim]`, v: `[kv_len, num_kv_heads, head_dim_v]`, all dense. K and V are
/// multiplied by `k_scale` / `v_scale` (1 unless the cache is FP8). Returns (out `[q_len,
/// num_q_heads, head_dim_v]`, lse `[q_len, num_q_heads]`, natural log, of the scaled scores).
pub fn attention<T: DType, C: DType>(
    q: &[T],
    k: &[C],
    v: &[C],
    s: AttentionShape,
    mask: &AttentionMask,
    k_scale: f64,
    v_scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    assert!(s.num_kv_heads > 0 && s.num_q_heads.is_multiple_of(s.num_kv_heads), "num_q_heads must be a multiple of num_kv_heads");
    assert_eq!(q.len(), s.q_len * s.num_q_heads * s.head_dim);
    assert_eq!(k.len(), s.kv_len * s.num_kv_heads * s.head_dim);
    assert_eq!(v.len(), s.kv_len * s.num_kv_heads * s.head_dim_v);
    let group = s.num_q_heads / s.num_kv_heads;
    let (out_w, lse_w) = (s.num_q_heads * s.head_dim_v, s.num_q_heads);
    let mut out = vec![0.0; s.q_len * out_w];
    let mut lse = vec![f64::NEG_INFINITY; s.q_len * lse_w];
    // Query i's heads into its rows of out and lse.
    let query = |i: usize, out: &mut [f64], lse: &mut [f64], scores: &mut [f64]| {
        let pos = (s.kv_len as i64) - (s.q_len as i64) + i as i64;
        for h in 0..s.num_q_heads {
            let kvh = h / group;
            let qrow = &q[(i * s.num_q_heads + h) * s.head_dim..][..s.head_dim];
            let mut max = f64::NEG_INFINITY;
            for (j, sc) in scores.iter_mut().enumerate() {
                if !mask.allows(pos, j as i64) {
                    *sc = f64::NEG_INFINITY;
                    continue;
                }
                let krow = &k[(j * s.num_kv_heads + kvh) * s.head_dim..][..s.head_dim];
                let dot: f64 = qrow.iter().zip(krow).map(|(a, b)| a.to_f64() * b.to_f64() * k_scale).sum();
                let mut x = dot * mask.scale;
                if let Some(cap) = mask.softcap {
                    x = cap * (x / cap).tanh();
                }
                *sc = x;
                max = max.max(x);
            }
            if max == f64::NEG_INFINITY {
                continue; // nothing visible: zeros, lse = -inf
            }
            let sum: f64 = scores.iter().map(|&x| (x - max).exp()).sum();
            lse[h] = max + sum.ln();
            let o = &mut out[h * s.head_dim_v..][..s.head_dim_v];
            for (j, &x) in scores.iter().enumerate() {
                if x == f64::NEG_INFINITY {
                    continue;
                }
                let p = (x - max).exp() / sum;
                let vrow = &v[(j * s.num_kv_heads + kvh) * s.head_dim_v..][..s.head_dim_v];
                for (od, vd) in o.iter_mut().zip(vrow) {
                    *od += p * vd.to_f64() * v_scale;
                }
            }
        }
    };
    // The queries split over the machine's threads when there is enough work (each query by
    // itself: the result does not depend on the split).
    let work = s.q_len * s.num_q_heads * s.kv_len * (s.head_dim + s.head_dim_v);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(work.div_ceil(1 << 18)).min(s.q_len).max(1);
    let per = s.q_len.div_ceil(threads).max(1);
    // Queries i0 .. i0 + rows into their rows of out (o) and lse (l).
    let run = |i0: usize, rows: usize, o: &mut [f64], l: &mut [f64]| {
        let mut scores = vec![0.0; s.kv_len];
        for r in 0..rows {
            query(i0 + r, &mut o[r * out_w..(r + 1) * out_w], &mut l[r * lse_w..(r + 1) * lse_w], &mut scores);
        }
    };
    if threads == 1 {
        run(0, s.q_len, &mut out, &mut lse);
    } else {
        std::thread::scope(|scope| {
            let (mut o_rest, mut l_rest) = (&mut out[..], &mut lse[..]);
            for i0 in (0..s.q_len).step_by(per) {
                let rows = per.min(s.q_len - i0);
                let (o, o_next) = std::mem::take(&mut o_rest).split_at_mut(rows * out_w);
                let (l, l_next) = std::mem::take(&mut l_rest).split_at_mut(rows * lse_w);
                (o_rest, l_rest) = (o_next, l_next);
                let run = &run;
                scope.spawn(move || run(i0, rows, o, l));
            }
        });
    }
    (out, lse)
}

/// Combines two partial attention results over disjoint key sets by their log-sum-exps:
/// lse = log(e^lse_a + e^lse_b), out = out_a·e^(lse_a − lse) + out_b·e^(lse_b − lse).
/// out_*: `[rows, head_dim_v]`, lse_*: `[rows]`. A side with lse = −∞ contributes nothing.
pub fn merge_states(out_a: &[f64], lse_a: &[f64], out_b: &[f64], lse_b: &[f64]) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(out_a.len(), out_b.len());
    assert_eq!(lse_a.len(), lse_b.len());
    let rows = lse_a.len();
    let dim = if rows == 0 { 0 } else { out_a.len() / rows };
    let mut out = vec![0.0; out_a.len()];
    let mut lse = vec![f64::NEG_INFINITY; rows];
    for r in 0..rows {
        let (a, b) = (lse_a[r], lse_b[r]);
        let m = a.max(b);
        if m == f64::NEG_INFINITY {
            continue;
        }
        let (wa, wb) = ((a - m).exp(), (b - m).exp());
        lse[r] = m + (wa + wb).ln();
        let (wa, wb) = (wa / (wa + wb), wb / (wa + wb));
        for d in 0..dim {
            out[r * dim + d] = out_a[r * dim + d] * wa + out_b[r * dim + d] * wb;
        }
    }
    (out, lse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Rng;

    fn shape(q_len: usize, kv_len: usize, nq: usize, nkv: usize, hd: usize) -> AttentionShape {
        AttentionShape { q_len, kv_len, num_q_heads: nq, num_kv_heads: nkv, head_dim: hd, head_dim_v: hd }
    }
    fn mask(causal: bool) -> AttentionMask {
        AttentionMask { scale: 0.125, causal, window_left: None, softcap: None }
    }
    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x == y) || (x - y).abs() < 1e-12)
    }

    #[test]
    fn gqa_equals_mha_with_repeated_kv_heads() {
        let mut rng = Rng::new(1);
        let (ql, kl, nkv, g, hd) = (5, 9, 2, 3, 16);
        let q: Vec<f32> = rng.vec(ql * nkv * g * hd, -1.0, 1.0);
        let k: Vec<f32> = rng.vec(kl * nkv * hd, -1.0, 1.0);
        let v: Vec<f32> = rng.vec(kl * nkv * hd, -1.0, 1.0);
        let rep = |x: &[f32]| -> Vec<f32> {
            x.chunks(nkv * hd).flat_map(|tok| (0..nkv * g).flat_map(move |h| tok[(h / g) * hd..][..hd].to_vec())).collect()
        };
        let (a, la) = attention(&q, &k, &v, shape(ql, kl, nkv * g, nkv, hd), &mask(true), 1.0, 1.0);
        let (b, lb) = attention(&q, &rep(&k), &rep(&v), shape(ql, kl, nkv * g, nkv * g, hd), &mask(true), 1.0, 1.0);
        assert!(close(&a, &b) && close(&la, &lb));
    }

    #[test]
    fn a_long_causal_batch_split_over_threads_equals_each_query_alone() {
        // 97 queries × 8 heads × 600 keys × 128: enough work for every thread the machine has.
        let mut rng = Rng::new(4);
        let (ql, kl, nq, nkv, hd) = (97, 600, 8, 2, 64);
        let q: Vec<f32> = rng.vec(ql * nq * hd, -1.0, 1.0);
        let k: Vec<f32> = rng.vec(kl * nkv * hd, -1.0, 1.0);
        let v: Vec<f32> = rng.vec(kl * nkv * hd, -1.0, 1.0);
        let (out, lse) = attention(&q, &k, &v, shape(ql, kl, nq, nkv, hd), &mask(true), 1.0, 1.0);
        for i in 0..ql {
            let pos = kl - ql + i; // its keys: 0 ..= pos
            let row = &q[i * nq * hd..][..nq * hd];
            let (o, l) = attention(row, &k[..(pos + 1) * nkv * hd], &v[..(pos + 1) * nkv * hd], shape(1, pos + 1, nq, nkv, hd), &mask(true), 1.0, 1.0);
            assert_eq!(o, out[i * nq * hd..][..nq * hd], "query {i}");
            assert_eq!(l, lse[i * nq..][..nq], "query {i}");
        }
    }

    #[test]
    fn window_wider_than_the_sequence_equals_causal() {
        let mut rng = Rng::new(2);
        let (ql, kl, hd) = (4, 11, 8);
        let q: Vec<f32> = rng.vec(ql * 2 * hd, -1.0, 1.0);
        let k: Vec<f32> = rng.vec(kl * hd, -1.0, 1.0);
        let v: Vec<f32> = rng.vec(kl * hd, -1.0, 1.0);
        let s = shape(ql, kl, 2, 1, hd);
        let wide = AttentionMask { window_left: Some(kl), ..mask(true) };
        assert_eq!(attention(&q, &k, &v, s, &wide, 1.0, 1.0), attention(&q, &k, &v, s, &mask(true), 1.0, 1.0));
        let narrow = AttentionMask { window_left: Some(2), ..mask(true) };
        assert_ne!(attention(&q, &k, &v, s, &narrow, 1.0, 1.0), attention(&q, &k, &v, s, &mask(true), 1.0, 1.0));
    }

    #[test]
    fn merging_two_halves_of_the_keys_equals_the_whole() {
        let mut rng = Rng::new(3);
        let (kl, hd, split) = (13, 8, 6);
        let q: Vec<f32> = rng.vec(hd, -2.0, 2.0);
        let k: Vec<f32> = rng.vec(kl * hd, -2.0, 2.0);
        let v: Vec<f32> = rng.vec(kl * hd, -2.0, 2.0);
        let full = attention(&q, &k, &v, shape(1, kl, 1, 1, hd), &mask(false), 1.0, 1.0);
        let a = attention(&q, &k[..split * hd], &v[..split * hd], shape(1, split, 1, 1, hd), &mask(false), 1.0, 1.0);
        let b = attention(&q, &k[split * hd..], &v[split * hd..], shape(1, kl - split, 1, 1, hd), &mask(false), 1.0, 1.0);
        let (o, l) = merge_states(&a.0, &a.1, &b.0, &b.1);
        assert!(o.iter().zip(&full.0).all(|(x, y)| (x - y).abs() < 1e-12));
        assert!((l[0] - full.1[0]).abs() < 1e-12);
        // Merging with an empty side is the identity.
        let (o2, l2) = merge_states(&full.0, &full.1, &vec![0.0; hd], &[f64::NEG_INFINITY]);
        assert_eq!((o2, l2), full);
    }

    #[test]
    fn causal_bottom_right_alignment_and_empty_rows() {
        // q_len = kv_len + 1 under causal: the first query is at position -1 and sees nothing.
        let q = vec![1.0f32; 3 * 4];
        let k = vec![1.0f32; 2 * 4];
        let v: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let (o, l) = attention(&q, &k, &v, shape(3, 2, 1, 1, 4), &mask(true), 1.0, 1.0);
        assert_eq!(&o[..4], &[0.0; 4]);
        assert_eq!(l[0], f64::NEG_INFINITY);
        // The second query (position 0) sees only key 0: out = v[0].
        assert_eq!(&o[4..8], &[0.0, 1.0, 2.0, 3.0]);
        // The last sees both keys equally (equal scores): the mean.
        assert_eq!(&o[8..12], &[2.0, 3.0, 4.0, 5.0]);
        assert!((l[2] - (0.125 * 4.0 + 2f64.ln())).abs() < 1e-12);
    }

    #[test]
    fn softcap_bounds_the_scores() {
        let m = AttentionMask { scale: 1.0, causal: false, window_left: None, softcap: Some(5.0) };
        let q = vec![2.0f32; 4];
        let k = vec![2.0f32; 4];
        let v = vec![1.0f32; 4];
        // One key: lse is its capped score, 5·tanh(16 / 5) < 5 (uncapped it would be 16).
        let (_, l) = attention(&q, &k, &v, shape(1, 1, 1, 1, 4), &m, 1.0, 1.0);
        assert!((l[0] - 5.0 * (16.0f64 / 5.0).tanh()).abs() < 1e-12 && l[0] < 5.0);
    }
}
