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

    /// The next token from one row of logits.
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
        let max = logits[idx[0]] as f64;
        let mut p: Vec<f64> = idx.iter().map(|&i| ((logits[i] as f64 - max) / t).exp()).collect();
        let total: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= total);
        // Top-p: the shortest prefix reaching top_p (at least one token).
        let mut acc = 0.0;
        let keep = p.iter().position(|&x| {
            acc += x;
            acc >= self.cfg.top_p as f64
        });
        let n = keep.map_or(p.len(), |i| i + 1);
        let mass: f64 = p[..n].iter().sum();
        let mut u = self.rng.uniform(0.0, mass);
        for (j, &x) in p[..n].iter().enumerate() {
            if u < x {
                return idx[j] as u32;
            }
            u -= x;
        }
        idx[n - 1] as u32
    }
}

/// The finite logits' ids by descending logit (ties: lower id first), the first `top_k` of
/// them (0: all). With top-k, only the k best are sorted (a selection first: O(vocab), not a
/// sort of the vocabulary); the order is total, so the list is the one a full sort gives.
fn candidates(logits: &[f32], top_k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).filter(|&i| logits[i].is_finite()).collect();
    let order = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    if top_k > 0 && top_k < idx.len() {
        idx.select_nth_unstable_by(top_k - 1, order);
        idx.truncate(top_k);
    }
    idx.sort_unstable_by(order);
    idx
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
            want.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            if top_k > 0 {
                want.truncate(top_k);
            }
            assert_eq!(candidates(&logits, top_k), want, "vocab {vocab} top_k {top_k}");
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
