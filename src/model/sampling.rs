//! Token sampling from logits: greedy, or temperature / top-k / top-p with a seed; and when a
//! sequence's generation ends ([`is_finished`], the rule both model paths share).

use crate::check::Rng;
use crate::{Error, Result};

/// How the next token is chosen. `temperature == 0` is greedy (argmax, ties to the lower id).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Softmax temperature, finite and >= 0; 0 is greedy. (A [`Sampler`] also takes a value
    /// not > 0, negative or NaN, as greedy; the generate functions refuse them:
    /// [`Sampling::validate`].)
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1: all).
    pub top_p: f32,
    /// Seed of the uniform numbers the draws use.
    pub seed: u64,
}

impl Sampling {
    /// Argmax every step (temperature 0); no numbers are drawn.
    pub fn greedy() -> Self {
        Self { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }

    /// Checks the settings the models' generate functions take: temperature finite and >= 0,
    /// top_p in (0, 1]. (top_k may be any count: past the vocabulary it keeps every token.)
    pub fn validate(&self, op: &'static str) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::Unsupported { op, what: "temperature (finite, >= 0; 0 is greedy)", value: self.temperature.to_string() });
        }
        crate::ops::elementwise::check_top_p(op, self.top_p)
    }
}

/// A sampler: the settings plus the random state (deterministic for a seed).
pub struct Sampler {
    cfg: Sampling,
    rng: Rng,
}

impl Sampler {
    /// A sampler with `cfg`, its random stream started from `cfg.seed`.
    pub fn new(cfg: Sampling) -> Self {
        Self { cfg, rng: Rng::new(cfg.seed) }
    }

    /// The next token from one row of logits: greedy ([`crate::reference::elementwise::argmax`])
    /// ([`Sampler::is_greedy`]), else [`crate::reference::elementwise::sample_row`] (temperature, top-k,
    /// top-p, then a draw) with this sampler's next uniform number.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.is_greedy() {
            return crate::reference::elementwise::argmax(logits);
        }
        let u = self.uniform();
        crate::reference::elementwise::sample_row(logits, self.cfg.temperature, self.cfg.top_k, self.cfg.top_p, u)
    }

    /// Whether this sampler takes the greedy token and draws no number: temperature not > 0
    /// (NaN included), the rule `sample_rows_each` applies per row.
    pub fn is_greedy(&self) -> bool {
        self.cfg.temperature.is_nan() || self.cfg.temperature <= 0.0
    }

    /// The next uniform number in [0, 1) of the seeded stream (what [`Sampler::sample`] draws
    /// with; the GPU path hands it to `sample_rows`, which makes the same choice).
    pub fn uniform(&mut self) -> f32 {
        (self.rng.uniform(0.0, 1.0) as f32).min(1.0 - f32::EPSILON / 2.0)
    }

    /// The settings it was made with.
    pub fn settings(&self) -> Sampling {
        self.cfg
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
    fn settings_out_of_range_are_refused() {
        let ok = Sampling { temperature: 0.7, top_k: 1 << 40, top_p: 1.0, seed: 1 };
        assert!(ok.validate("t").is_ok() && Sampling::greedy().validate("t").is_ok());
        for t in [-5.0, f32::NAN, f32::INFINITY] {
            assert!(Sampling { temperature: t, ..ok }.validate("t").is_err(), "temperature {t}");
        }
        for p in [0.0, -1.0, 7.0, f32::NAN] {
            assert!(Sampling { top_p: p, ..ok }.validate("t").is_err(), "top_p {p}");
        }
    }

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
