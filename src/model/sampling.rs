//! Token sampling from logits: greedy, or temperature / top-k / top-p with a seed; and when a
//! sequence's generation ends ([`is_finished`], the rule both model paths share).

use crate::check::Rng;

/// How the next token is chosen. `temperature == 0` is greedy (argmax, ties to the lower id).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1: all).
    pub top_p: f32,
    pub seed: u64,
}

impl Sampling {
    pub fn greedy() -> Self {
        Self { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

/// A sampler: the settings plus the random state (deterministic for a seed).
pub struct Sampler {
    cfg: Sampling,
    rng: Rng,
}

impl Sampler {
    pub fn new(cfg: Sampling) -> Self {
        Self { cfg, rng: Rng::new(cfg.seed) }
    }

    /// The next token from one row of logits: temperature, then top-k, then top-p (the
    /// shortest run of the most likely tokens whose probability reaches top_p, at least one),
    /// then a draw from what is left. O(vocabulary) plus a sort of the tokens kept: no sort of
    /// the whole vocabulary (a 128k-token top-p used to sort it at every step).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let argmax = || crate::reference::elementwise::argmax(logits);
        if self.cfg.temperature <= 0.0 {
            return argmax();
        }
        let idx = candidates(logits, self.cfg.top_k);
        if idx.is_empty() {
            return argmax();
        }
        let t = self.cfg.temperature as f64;
        let max = idx.iter().map(|&i| logits[i]).fold(f32::NEG_INFINITY, f32::max) as f64;
        let weight = |i: usize| ((logits[i] as f64 - max) / t).exp();
        let kept = if self.cfg.top_p < 1.0 { top_p_prefix(logits, idx, &weight, self.cfg.top_p as f64) } else { idx };
        let mass: f64 = kept.iter().map(|&i| weight(i)).sum();
        let mut u = self.rng.uniform(0.0, mass);
        for &i in &kept {
            let w = weight(i);
            if u < w {
                return i as u32;
            }
            u -= w;
        }
        kept[kept.len() - 1] as u32
    }
}

/// Descending logit, ties to the lower id: the order top-k and top-p rank tokens by.
fn rank(logits: &[f32]) -> impl Fn(&usize, &usize) -> std::cmp::Ordering + '_ {
    |a, b| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b))
}

/// The finite logits' ids: with `top_k` > 0 the `top_k` best in rank order (a selection, then a
/// sort of those k only), else all of them in id order.
fn candidates(logits: &[f32], top_k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).filter(|&i| logits[i].is_finite()).collect();
    if top_k > 0 {
        if top_k < idx.len() {
            idx.select_nth_unstable_by(top_k - 1, rank(logits));
            idx.truncate(top_k);
        }
        idx.sort_unstable_by(rank(logits));
    }
    idx
}

/// Top-p over `idx` (any order): the shortest prefix of the ranked tokens whose weight reaches
/// `top_p` of the total (at least one token), in rank order. Only the best k are ranked, k
/// doubling from 64 until their prefix reaches it: what a sort of all of `idx` would keep.
fn top_p_prefix(logits: &[f32], mut idx: Vec<usize>, weight: &dyn Fn(usize) -> f64, top_p: f64) -> Vec<usize> {
    let target = top_p * idx.iter().map(|&i| weight(i)).sum::<f64>();
    let mut k = idx.len().min(64);
    loop {
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, rank(logits));
        }
        idx[..k].sort_unstable_by(rank(logits));
        let mut acc = 0.0;
        if let Some(j) = idx[..k].iter().position(|&i| {
            acc += weight(i);
            acc >= target
        }) {
            idx.truncate(j + 1);
            return idx;
        }
        if k == idx.len() {
            return idx; // rounding left the sum just short of the target: every token
        }
        k = (2 * k).min(idx.len());
    }
}

/// Whether a sequence that has generated `generated` (after its prompt) is done: it reached
/// `max_new_tokens`, or its last token is one of `eos` (the EOS token stays in the output, as
/// in transformers). Empty `eos`: always exactly `max_new_tokens` tokens.
pub fn is_finished(generated: &[u32], max_new_tokens: usize, eos: &[u32]) -> bool {
    generated.len() >= max_new_tokens || generated.last().is_some_and(|t| eos.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_ends_at_max_new_tokens_or_right_after_an_eos_token() {
        assert!(!is_finished(&[], 3, &[7]));
        assert!(!is_finished(&[5, 6], 3, &[7]));
        assert!(is_finished(&[5, 7], 3, &[2, 7]));
        assert!(is_finished(&[5, 6, 8], 3, &[7]));
        assert!(!is_finished(&[7, 5], 3, &[7]), "only the last token counts");
        assert!(!is_finished(&[7, 7], 3, &[]), "no EOS ids: fixed length");
        assert!(is_finished(&[], 0, &[]));
    }

    #[test]
    fn greedy_takes_the_argmax_and_ties_go_low() {
        let mut s = Sampler::new(Sampling::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    /// Top-k by selection gives the list a full sort of the vocabulary gives (the draw that
    /// follows is the same code either way), on tie-heavy logits with NaN and -inf.
    #[test]
    fn top_k_by_selection_is_the_full_sort_cut_at_k() {
        let mut data = Rng::new(17);
        for (vocab, top_k) in [(1000, 50), (1000, 1), (5000, 40), (300, 299), (300, 300), (300, 1000), (64, 0)] {
            // Logits on a coarse grid (many exact ties) and a few non-finite ones.
            let mut logits: Vec<f32> = (0..vocab).map(|_| (data.uniform(-8.0, 8.0) * 4.0).round() as f32 / 4.0).collect();
            logits[vocab / 3] = f32::NAN;
            logits[vocab / 2] = f32::NEG_INFINITY;
            let mut want: Vec<usize> = (0..vocab).filter(|&i| logits[i].is_finite()).collect();
            if top_k > 0 {
                want.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
                want.truncate(top_k);
            }
            assert_eq!(candidates(&logits, top_k), want, "vocab {vocab} top_k {top_k}");
        }
    }

    /// Top-p by doubling selections keeps exactly the prefix a full sort keeps, over peaked and
    /// flat distributions (prefixes from 1 token to all of them), ties and every top_p.
    #[test]
    fn top_p_by_selection_is_the_full_sort_prefix() {
        let mut data = Rng::new(23);
        for (vocab, spread) in [(5000, 12.0), (5000, 0.5), (300, 4.0), (70, 1.0), (1, 1.0)] {
            let logits: Vec<f32> = (0..vocab).map(|_| (data.uniform(-spread, spread) * 8.0).round() as f32 / 8.0).collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let weight = |i: usize| ((logits[i] as f64 - max) / 0.7).exp();
            let mut sorted: Vec<usize> = (0..vocab).collect();
            sorted.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            let total: f64 = sorted.iter().map(|&i| weight(i)).sum();
            for top_p in [1e-9, 0.1, 0.5, 0.9, 0.95, 0.999, 0.999999] {
                let mut acc = 0.0;
                let n = sorted.iter().position(|&i| {
                    acc += weight(i);
                    acc >= top_p * total
                });
                let want = sorted[..n.map_or(vocab, |j| j + 1)].to_vec();
                let got = top_p_prefix(&logits, (0..vocab).collect(), &weight, top_p);
                assert_eq!(got, want, "vocab {vocab} spread {spread} top_p {top_p}");
            }
        }
    }

    #[test]
    fn top_k_1_and_tiny_top_p_are_greedy_and_sampling_is_seeded() {
        let logits = [0.5f32, 2.0, 1.0, 1.9];
        let mut k1 = Sampler::new(Sampling { temperature: 1.0, top_k: 1, top_p: 1.0, seed: 3 });
        let mut p0 = Sampler::new(Sampling { temperature: 1.0, top_k: 0, top_p: 1e-6, seed: 3 });
        for _ in 0..20 {
            assert_eq!(k1.sample(&logits), 1);
            assert_eq!(p0.sample(&logits), 1);
        }
        let draw = |seed| {
            let mut s = Sampler::new(Sampling { temperature: 1.0, top_k: 0, top_p: 1.0, seed });
            (0..64).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        let d = draw(9);
        // Every token has probability > 5%: all four appear in 64 draws.
        assert!((0..4).all(|t| d.contains(&t)), "{d:?}");
        // top_k 2 never draws tokens 0 or 2.
        let mut s = Sampler::new(Sampling { temperature: 1.0, top_k: 2, top_p: 1.0, seed: 1 });
        assert!((0..200).map(|_| s.sample(&logits)).all(|t| t == 1 || t == 3));
    }
}
