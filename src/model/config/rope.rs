//! `ModelConfig`'s RoPE: the scaling dict (both transformers field styles, already merged by
//! `from_json`) turned into a [`RopeConfig`], and the attention softmax scale that YaRN's
//! `mscale_all_dim` changes for MLA.

use super::{bad, ModelConfig};
use crate::ops::rope::config::yarn_get_mscale;
use crate::ops::rope::{RopeConfig, RopeScaling, RopeStyle, Yarn};
use crate::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The scaling dict's kind: `rope_type`, or the legacy `type`; "default" when neither.
pub(super) fn rope_type<'a>(get: impl Fn(&str) -> Option<&'a Value>) -> &'a str {
    get("rope_type").or_else(|| get("type")).and_then(Value::as_str).unwrap_or("default")
}

impl ModelConfig {
    /// The RoPE of every attention layer, from `rope_theta` and the scaling dict: default,
    /// linear, dynamic (NTK, at `seq_len` tokens), llama3, yarn. GQA: NeoX style over the whole
    /// head. MLA: over the `qk_rope_head_dim` rotary part alone (the config is validated against
    /// that part as its head), GPT-J style when `rope_interleave` — transformers rotates the
    /// interleaved pairs and writes them out de-interleaved, the same permutation for q and k,
    /// so every q·k (all MLA uses them for) equals the in-place GPT-J rotation's.
    pub fn rope(&self, seq_len: usize) -> Result<RopeConfig> {
        let (dim, style) = match &self.mla {
            Some(m) => (m.qk_rope_head_dim, if m.rope_interleave { RopeStyle::GptJ } else { RopeStyle::NeoX }),
            None => (self.head_dim, RopeStyle::NeoX),
        };
        let base = RopeConfig::new(dim, self.rope_theta).with_style(style);
        let here = Path::new("config.json");
        let Some(sc) = &self.rope_scaling else {
            base.validate("ModelConfig::rope", dim)?;
            return Ok(base);
        };
        if !sc.is_object() {
            return Err(bad(here, format!("rope_scaling / rope_parameters {sc} (an object)")));
        }
        let num = |k: &str| sc.get(k).and_then(Value::as_f64);
        let need = |k: &'static str| num(k).ok_or_else(|| bad(here, format!("rope scaling without `{k}`")));
        // A whole number (written 64 or 64.0), or absent: max_position_embeddings.
        let original = match sc.get("original_max_position_embeddings") {
            None | Some(Value::Null) => self.max_position_embeddings,
            Some(v) => v
                .as_f64()
                .filter(|f| f.fract() == 0.0 && (1.0..=i32::MAX as f64).contains(f))
                .ok_or_else(|| bad(here, format!("original_max_position_embeddings {v} (a whole number, 1 ..= 2^31 - 1)")))? as usize,
        };
        let kind = rope_type(|k| sc.get(k));
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: need("factor")? },
            // Lengths up to the trained one give the unscaled frequencies: held there, so that
            // steps at those lengths share one RopeConfig (and one decode graph).
            "dynamic" => RopeScaling::DynamicNtk { factor: need("factor")?, original_max_positions: self.max_position_embeddings, seq_len: seq_len.max(self.max_position_embeddings) },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_positions: original,
            },
            "yarn" => RopeScaling::Yarn(Yarn {
                beta_fast: num("beta_fast").unwrap_or(32.0),
                beta_slow: num("beta_slow").unwrap_or(1.0),
                mscale: num("mscale"),
                mscale_all_dim: num("mscale_all_dim"),
                attention_factor: num("attention_factor"),
                truncate: sc.get("truncate").and_then(Value::as_bool).unwrap_or(true),
                ..Yarn::new(need("factor")?, original)
            }),
            other => return Err(Error::Unsupported { op: "ModelConfig::rope", what: "rope_type", value: other.to_string() }),
        };
        let cfg = base.with_scaling(scaling);
        cfg.validate("ModelConfig::rope", dim)?;
        Ok(cfg)
    }

    /// The attention softmax scale: 1/√head_dim; for MLA with a scaled RoPE that has
    /// `mscale_all_dim` also times mscale(factor, mscale_all_dim)² (HF `yarn_apply_mscale`).
    pub fn softmax_scale(&self) -> Result<f64> {
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let Some(sc) = self.rope_scaling.as_ref().filter(|_| self.mla.is_some()) else { return Ok(scale) };
        let kind = rope_type(|k| sc.get(k));
        let all_dim = sc.get("mscale_all_dim").and_then(Value::as_f64).unwrap_or(0.0);
        if kind == "default" || all_dim == 0.0 {
            return Ok(scale);
        }
        let factor = sc.get("factor").and_then(Value::as_f64).ok_or_else(|| bad(Path::new("config.json"), "rope scaling without `factor`"))?;
        let m = yarn_get_mscale(factor, all_dim);
        Ok(scale * m * m)
    }
}
