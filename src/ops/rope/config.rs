//! RoPE configuration and its frequency table: the one place the frequency formulas live.
//! The host computes `inv_freq[i]` (radians per position of pair i) in f64 from the config;
//! the kernels receive the table and only form `position · inv_freq[i]`, and the CPU reference
//! uses the same table. The formulas follow HF transformers' `modeling_rope_utils.py`
//! (`_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`,
//! `_compute_dynamic_ntk_parameters`, `_compute_llama3_parameters`, `_compute_yarn_parameters`),
//! evaluated in f64 where HF uses f32.

use crate::{Error, Result};
use std::f64::consts::PI;

/// Largest rotary_dim the kernels take.
pub const ROPE_MAX_ROTARY_DIM: usize = 2 * crate::ffi::WC_ROPE_MAX_PAIRS as usize;

/// Largest inv_freq entry accepted (radians per position): position · inv_freq stays finite
/// in f64 for every i64 position. Unscaled tables are at most 1; only extreme scaling factors
/// come near it.
const MAX_INV_FREQ: f64 = 4_294_967_296.0;

/// The frequency table as the C parameters hold it (unused pairs 0).
pub(crate) type FreqTable = [f64; crate::ffi::WC_ROPE_MAX_PAIRS as usize];

/// A config's table, and whether every entry is in 0 ..= [`MAX_INV_FREQ`] (checked once, when
/// the table is built).
struct CachedTable {
    cfg: RopeConfig,
    table: Box<FreqTable>,
    in_range: bool,
}

thread_local! {
    /// The last config's table on this thread. An engine calls the family with one config per
    /// model, layer after layer, and the table (`rotary_dim / 2` powf in f64, more for YaRN and
    /// Llama 3) was most of the op's host work: 1.0 us of 2.8 at rotary_dim 128 (docs/rope.md,
    /// "Host cost per call"). Equal configs give equal tables (`PartialEq` on the fields; NaN is
    /// never equal, so such a config only misses), so a hit is exact.
    static LAST_TABLE: std::cell::RefCell<Option<CachedTable>> = const { std::cell::RefCell::new(None) };
}

/// Which elements of the rotary part `r` form a rotated pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// `(r[i], r[i + rotary_dim/2])`: rotate halves (Llama, Qwen, Mistral, GPT-NeoX; HF's
    /// `rotate_half`; vLLM `is_neox_style=True`).
    NeoX,
    /// `(r[2i], r[2i + 1])`: interleaved pairs (GPT-J, ChatGLM; vLLM `is_neox_style=False`).
    GptJ,
}

/// YaRN as in DeepSeek-V3 (HF `_compute_yarn_parameters`; DeepSeek's `yarn_get_mscale`,
/// `yarn_find_correction_range`, `yarn_linear_ramp_mask`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    /// Context extension factor (DeepSeek-V3: 40).
    pub factor: f64,
    /// Pre-training context (DeepSeek-V3: 4096); sets the correction range.
    pub original_max_positions: usize,
    /// Pairs that turn more than `beta_fast` times over `original_max_positions` keep their
    /// frequency (HF default 32).
    pub beta_fast: f64,
    /// Pairs that turn fewer than `beta_slow` times are interpolated (divided by `factor`); a
    /// linear ramp blends the pairs between the two (HF default 1).
    pub beta_slow: f64,
    /// With both set (and nonzero), attention_factor = mscale(factor, mscale) /
    /// mscale(factor, mscale_all_dim) (DeepSeek-V3: 1 and 1, so 1); otherwise mscale(factor, 1).
    pub mscale: Option<f64>,
    /// The divisor's mscale in the rule above (`mscale_all_dim` in config.json).
    pub mscale_all_dim: Option<f64>,
    /// An explicit attention factor overrides the mscale rule (HF `attention_factor`).
    pub attention_factor: Option<f64>,
    /// Round the correction range outward to whole dimensions (HF's default; gpt-oss: false).
    pub truncate: bool,
}

impl Yarn {
    /// HF's defaults: beta_fast 32, beta_slow 1, no mscale, truncate.
    pub fn new(factor: f64, original_max_positions: usize) -> Self {
        Self {
            factor,
            original_max_positions,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: None,
            mscale_all_dim: None,
            attention_factor: None,
            truncate: true,
        }
    }
    /// DeepSeek-V3's config.json `rope_scaling`.
    pub fn deepseek_v3() -> Self {
        Self { mscale: Some(1.0), mscale_all_dim: Some(1.0), ..Self::new(40.0, 4096) }
    }
}

/// How the base frequencies are scaled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// `inv_freq[i] = theta^(−2i / rotary_dim)`.
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        /// The divisor (> 0).
        factor: f64,
    },
    /// Dynamic NTK: theta grows with the current sequence length once it passes
    /// `original_max_positions` (HF's `max_position_embeddings`). `seq_len` is chosen by the
    /// caller: HF uses max(position) + 1 of the batch, vLLM `original_max_positions · factor`.
    DynamicNtk {
        /// The scaling factor (>= 1).
        factor: f64,
        /// Pre-training context: theta is unchanged up to this length.
        original_max_positions: usize,
        /// The sequence length theta is computed for (see above).
        seq_len: usize,
    },
    /// Llama 3.1: long wavelengths divided by `factor`, short ones kept, a smooth ramp between.
    Llama3 {
        /// Divisor of the long wavelengths' frequencies (Llama 3.1: 8).
        factor: f64,
        /// Wavelengths above `original_max_positions / low_freq_factor` are long (Llama 3.1: 1).
        low_freq_factor: f64,
        /// Wavelengths below `original_max_positions / high_freq_factor` are short (Llama 3.1: 4).
        high_freq_factor: f64,
        /// Pre-training context (Llama 3.1: 8192).
        original_max_positions: usize,
    },
    /// YaRN (DeepSeek-V3, Qwen long-context, gpt-oss).
    Yarn(Yarn),
}

/// Everything that defines the rotation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeConfig {
    /// Rotated elements per head (even, 2 ..= 512); HF: head_dim · partial_rotary_factor.
    pub rotary_dim: usize,
    /// Index of the first rotated element in each head (0 unless the rotary part sits after
    /// a non-rotated one, e.g. DeepSeek MLA's `[nope | rope]` head).
    pub rotary_offset: usize,
    /// Base `rope_theta` (> 1).
    pub theta: f64,
    /// Which elements form a rotated pair.
    pub style: RopeStyle,
    /// How the base frequencies are scaled for long contexts.
    pub scaling: RopeScaling,
}

impl RopeConfig {
    /// NeoX style, no scaling, rotary part at the start of the head.
    pub fn new(rotary_dim: usize, theta: f64) -> Self {
        Self { rotary_dim, rotary_offset: 0, theta, style: RopeStyle::NeoX, scaling: RopeScaling::None }
    }
    /// The same config with another pairing style.
    pub fn with_style(self, style: RopeStyle) -> Self {
        Self { style, ..self }
    }
    /// The same config with another frequency scaling.
    pub fn with_scaling(self, scaling: RopeScaling) -> Self {
        Self { scaling, ..self }
    }
    /// The same config with the rotary part starting at element `rotary_offset` of each head.
    pub fn with_offset(self, rotary_offset: usize) -> Self {
        Self { rotary_offset, ..self }
    }

    /// Checks every field (including against `head_dim`, the head the rotary part sits in).
    pub fn validate(&self, op: &'static str, head_dim: usize) -> Result<()> {
        let bad = |what: &'static str, value: String| Err(Error::Unsupported { op, what, value });
        let d = self.rotary_dim;
        if d < 2 || !d.is_multiple_of(2) || d > ROPE_MAX_ROTARY_DIM {
            return bad("rotary_dim (even, 2 ..= 512)", d.to_string());
        }
        if self.rotary_offset.checked_add(d).is_none_or(|end| end > head_dim) {
            return bad("rotary_offset + rotary_dim (must fit head_dim)", format!("{} + {d} > {head_dim}", self.rotary_offset));
        }
        if !(self.theta.is_finite() && self.theta > 1.0) {
            return bad("rope theta (finite, > 1)", self.theta.to_string());
        }
        let pos = |v: f64| v.is_finite() && v > 0.0;
        match self.scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } if !pos(factor) => return bad("linear scaling factor (finite, > 0)", factor.to_string()),
            RopeScaling::Linear { .. } => {}
            RopeScaling::DynamicNtk { factor, original_max_positions, .. } => {
                if !(factor.is_finite() && factor >= 1.0) || original_max_positions == 0 || d <= 2 {
                    return bad(
                        "dynamic NTK scaling (factor >= 1, original_max_positions > 0, rotary_dim > 2)",
                        format!("{:?}, rotary_dim {d}", self.scaling),
                    );
                }
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions } => {
                if !pos(factor) || !pos(low_freq_factor) || !(high_freq_factor.is_finite() && high_freq_factor > low_freq_factor) || original_max_positions == 0 {
                    return bad("Llama 3 scaling (factors > 0, high_freq_factor > low_freq_factor)", format!("{:?}", self.scaling));
                }
            }
            RopeScaling::Yarn(y) => {
                let finite_opt = |v: Option<f64>| v.is_none_or(f64::is_finite);
                if !pos(y.factor)
                    || y.original_max_positions == 0
                    || !pos(y.beta_slow)
                    || !(y.beta_fast.is_finite() && y.beta_fast > y.beta_slow)
                    || !finite_opt(y.mscale)
                    || !finite_opt(y.mscale_all_dim)
                    || !y.attention_factor.is_none_or(pos)
                {
                    return bad("YaRN scaling (factor > 0, beta_fast > beta_slow > 0, finite mscales)", format!("{y:?}"));
                }
            }
        }
        let af = self.attention_factor();
        // (the kernels take it as f32: 1e39 would be inf there, 1e-50 zero)
        if !pos(af) || !pos(af as f32 as f64) {
            return bad("attention factor (finite, > 0, as f32 too)", af.to_string());
        }
        // Extreme factors pass the field checks but not the table: a linear factor of 1e-320,
        // or a dynamic-NTK factor of 1e17 (its base rounds to 0), give inf or NaN entries.
        let out_of_range = self.with_freq_table(|t, in_range| if in_range { None } else { t.iter().take(d / 2).copied().find(|f| !(0.0..=MAX_INV_FREQ).contains(f)) });
        if let Some(f) = out_of_range {
            return bad("frequency table (every inv_freq in 0 ..= 2^32; check the scaling factors)", f.to_string());
        }
        Ok(())
    }

    /// Calls `f` with [`RopeConfig::inv_freq`] as the C parameters hold it (unused entries 0)
    /// and whether every entry is in 0 ..= 2^32, from this thread's last-config cache when it
    /// matches (built and range-checked once per config, not per call).
    pub(crate) fn with_freq_table<R>(&self, f: impl FnOnce(&FreqTable, bool) -> R) -> R {
        LAST_TABLE.with_borrow_mut(|last| {
            if !last.as_ref().is_some_and(|c| c.cfg == *self) {
                let mut table = Box::new([0f64; crate::ffi::WC_ROPE_MAX_PAIRS as usize]);
                table.iter_mut().zip(self.inv_freq()).for_each(|(d, f)| *d = f);
                let in_range = table.iter().take(self.rotary_dim / 2).all(|f| (0.0..=MAX_INV_FREQ).contains(f));
                *last = Some(CachedTable { cfg: *self, table, in_range });
            }
            let c = last.as_ref().expect("filled above");
            f(&c.table, c.in_range)
        })
    }

    /// The frequency table `inv_freq[0 .. rotary_dim/2]`, radians per position, in f64.
    /// Call [`RopeConfig::validate`] first (it rejects configs whose table is not finite, or
    /// has entries above 2^32).
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.rotary_dim as f64;
        let half = self.rotary_dim / 2;
        let base_inv = |theta: f64| -> Vec<f64> { (0..half).map(|i| 1.0 / theta.powf((2 * i) as f64 / d)).collect() };
        match self.scaling {
            RopeScaling::None => base_inv(self.theta),
            RopeScaling::Linear { factor } => base_inv(self.theta).into_iter().map(|f| f / factor).collect(),
            RopeScaling::DynamicNtk { factor, original_max_positions, seq_len } => {
                // _compute_dynamic_ntk_parameters: seq_len = max(seq_len, max_position_embeddings);
                // base = theta · ((factor · seq_len / max_pos) − (factor − 1))^(dim / (dim − 2)).
                let max_pos = original_max_positions as f64;
                let seq = (seq_len as f64).max(max_pos);
                let theta = self.theta * ((factor * seq / max_pos) - (factor - 1.0)).powf(d / (d - 2.0));
                base_inv(theta)
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions } => {
                llama3_inv_freq(&base_inv(self.theta), factor, low_freq_factor, high_freq_factor, original_max_positions as f64)
            }
            RopeScaling::Yarn(y) => yarn_inv_freq(self.theta, self.rotary_dim, &y),
        }
    }

    /// The factor cos and sin are multiplied by: YaRN's mscale rule, 1 for every other scaling.
    pub fn attention_factor(&self) -> f64 {
        match self.scaling {
            RopeScaling::Yarn(y) => y.attention_factor.unwrap_or_else(|| match (y.mscale, y.mscale_all_dim) {
                (Some(m), Some(a)) if m != 0.0 && a != 0.0 => yarn_get_mscale(y.factor, m) / yarn_get_mscale(y.factor, a),
                _ => yarn_get_mscale(y.factor, 1.0),
            }),
            _ => 1.0,
        }
    }
}

/// HF `_compute_llama3_parameters` (Llama 3.1's `apply_scaling`):
///   wavelen = 2π / f;  low_wl = old_ctx / low_freq_factor;  high_wl = old_ctx / high_freq_factor
///   wavelen > low_wl (long):  f / factor
///   wavelen < high_wl (short): f
///   otherwise: smooth = (old_ctx / wavelen − low_freq_factor) / (high_freq_factor − low_freq_factor),
///              (1 − smooth) · f / factor + smooth · f
pub(crate) fn llama3_inv_freq(inv: &[f64], factor: f64, low_freq_factor: f64, high_freq_factor: f64, old_ctx: f64) -> Vec<f64> {
    let low_wl = old_ctx / low_freq_factor;
    let high_wl = old_ctx / high_freq_factor;
    inv.iter()
        .map(|&f| {
            let wavelen = 2.0 * PI / f;
            if wavelen > low_wl {
                f / factor
            } else if wavelen < high_wl {
                f
            } else {
                let smooth = (old_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * f / factor + smooth * f
            }
        })
        .collect()
}

/// `yarn_get_mscale(scale, mscale)` (DeepSeek-V3; HF `get_mscale`): 0.1 · mscale · ln(scale) + 1,
/// or 1 when scale <= 1.
pub(crate) fn yarn_get_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

/// `yarn_find_correction_dim`: the dimension whose pair turns `num_rotations` times over
/// `max_positions`: dim · ln(max_positions / (num_rotations · 2π)) / (2 ln base).
pub(crate) fn yarn_find_correction_dim(num_rotations: f64, dim: f64, base: f64, max_positions: f64) -> f64 {
    dim * (max_positions / (num_rotations * 2.0 * PI)).ln() / (2.0 * base.ln())
}

/// `yarn_find_correction_range(beta_fast, beta_slow, ...)`: (floor(low), ceil(high)) when
/// truncating, clamped to [0, dim − 1].
pub(crate) fn yarn_find_correction_range(y: &Yarn, dim: f64, base: f64) -> (f64, f64) {
    let omp = y.original_max_positions as f64;
    let mut low = yarn_find_correction_dim(y.beta_fast, dim, base, omp);
    let mut high = yarn_find_correction_dim(y.beta_slow, dim, base, omp);
    if y.truncate {
        low = low.floor();
        high = high.ceil();
    }
    (low.max(0.0), high.min(dim - 1.0))
}

/// HF `_compute_yarn_parameters`:
///   pos_freqs[i] = base^(2i/dim); extrapolation = 1 / pos_freqs; interpolation = 1 / (factor · pos_freqs)
///   ramp[i] = clamp((i − low) / (high − low), 0, 1)  (high += 0.001 when low == high)
///   extrapolation_factor = 1 − ramp
///   inv_freq = interpolation · (1 − extrapolation_factor) + extrapolation · extrapolation_factor
fn yarn_inv_freq(theta: f64, rotary_dim: usize, y: &Yarn) -> Vec<f64> {
    let dim = rotary_dim as f64;
    let (low, mut high) = yarn_find_correction_range(y, dim, theta);
    if low == high {
        high += 0.001;
    }
    (0..rotary_dim / 2)
        .map(|i| {
            let pos_freq = theta.powf((2 * i) as f64 / dim);
            let extrapolation = 1.0 / pos_freq;
            let interpolation = 1.0 / (y.factor * pos_freq);
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation_factor = 1.0 - ramp;
            interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
        })
        .collect()
}
