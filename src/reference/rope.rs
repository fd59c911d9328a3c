//! CPU oracle for the RoPE family, in f64 on inputs already in the kernel's dtype. The
//! frequency table is [`RopeConfig::inv_freq`] (the formulas live there, once); this module
//! applies it: pair i of a head at position p turns by `p · inv_freq[i]`, in f64.

use crate::ops::rms_norm::RmsNormConfig;
use crate::ops::rope::{RopeConfig, RopeStyle};
use crate::DType;

/// Rotates the rotary part of one head in place (f64).
pub fn rotate_head(head: &mut [f64], position: i64, inv_freq: &[f64], attention_factor: f64, cfg: &RopeConfig) {
    let half = cfg.rotary_dim / 2;
    let r = &mut head[cfg.rotary_offset..cfg.rotary_offset + cfg.rotary_dim];
    for (i, &f) in inv_freq.iter().enumerate().take(half) {
        let (s, c) = (position as f64 * f).sin_cos();
        let (c, s) = (c * attention_factor, s * attention_factor);
        let (a, b) = match cfg.style {
            RopeStyle::NeoX => (i, i + half),
            RopeStyle::GptJ => (2 * i, 2 * i + 1),
        };
        let (x1, x2) = (r[a], r[b]);
        r[a] = x1 * c - x2 * s;
        r[b] = x2 * c + x1 * s;
    }
}

/// Rotates every head of dense rows `[num_tokens, heads, head_dim]` (f64, in place).
fn rotate_rows(x: &mut [f64], head_dim: usize, positions: &[i64], cfg: &RopeConfig) {
    let inv_freq = cfg.inv_freq();
    let af = cfg.attention_factor();
    if positions.is_empty() {
        return;
    }
    let per_token = x.len() / positions.len();
    for (t, row) in x.chunks_exact_mut(per_token.max(1)).enumerate() {
        for head in row.chunks_exact_mut(head_dim) {
            rotate_head(head, positions[t], &inv_freq, af, cfg);
        }
    }
}

fn to_f64<T: DType>(x: &[T]) -> Vec<f64> {
    x.iter().map(|v| v.to_f64()).collect()
}

/// `rope` on dense q `[num_tokens, num_q_heads, head_dim]` and k `[num_tokens, num_kv_heads,
/// head_dim]`, num_tokens = positions.len(): returns (q, k) in f64.
pub fn rope<T: DType>(q: &[T], k: &[T], head_dim: usize, positions: &[i64], cfg: &RopeConfig) -> (Vec<f64>, Vec<f64>) {
    let (mut qo, mut ko) = (to_f64(q), to_f64(k));
    rotate_rows(&mut qo, head_dim, positions, cfg);
    rotate_rows(&mut ko, head_dim, positions, cfg);
    (qo, ko)
}

/// `qk_norm_rope`: per-head RMSNorm (q_weight / k_weight, `[head_dim]`) then RoPE, in f64.
pub fn qk_norm_rope<T: DType>(
    q: &[T],
    k: &[T],
    positions: &[i64],
    q_weight: &[T],
    k_weight: &[T],
    norm: RmsNormConfig,
    cfg: &RopeConfig,
) -> (Vec<f64>, Vec<f64>) {
    let head_dim = q_weight.len();
    let mut qo = super::rms_norm::rms_norm(q, q_weight, norm);
    let mut ko = super::rms_norm::rms_norm(k, k_weight, norm);
    rotate_rows(&mut qo, head_dim, positions, cfg);
    rotate_rows(&mut ko, head_dim, positions, cfg);
    (qo, ko)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Rng;
    use crate::ops::rope::{RopeScaling, Yarn};

    fn rel_close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    fn configs() -> Vec<RopeConfig> {
        let base = RopeConfig::new(64, 10000.0);
        vec![
            base,
            base.with_style(RopeStyle::GptJ),
            RopeConfig::new(32, 1e6).with_offset(16),
            base.with_scaling(RopeScaling::Linear { factor: 4.0 }),
            base.with_scaling(RopeScaling::DynamicNtk { factor: 2.0, original_max_positions: 2048, seq_len: 5000 }),
            RopeConfig::new(64, 500000.0).with_scaling(RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_positions: 8192,
            }),
            base.with_scaling(RopeScaling::Yarn(Yarn::deepseek_v3())).with_style(RopeStyle::GptJ),
            base.with_scaling(RopeScaling::Yarn(Yarn::new(4.0, 4096))),
        ]
    }

    #[test]
    fn rotation_preserves_each_pairs_norm_and_position_zero_is_the_identity() {
        let mut rng = Rng::new(1);
        for cfg in configs() {
            cfg.validate("t", 96).unwrap();
            let x: Vec<f64> = (0..96).map(|_| rng.uniform(-3.0, 3.0)).collect();
            let (inv, af) = (cfg.inv_freq(), cfg.attention_factor());
            let half = cfg.rotary_dim / 2;
            let pair = |i: usize| match cfg.style {
                RopeStyle::NeoX => (cfg.rotary_offset + i, cfg.rotary_offset + i + half),
                RopeStyle::GptJ => (cfg.rotary_offset + 2 * i, cfg.rotary_offset + 2 * i + 1),
            };
            for pos in [0i64, 1, 7, 4095, 131071, -3] {
                let mut y = x.clone();
                rotate_head(&mut y, pos, &inv, af, &cfg);
                for i in 0..half {
                    let (a, b) = pair(i);
                    let before = x[a].hypot(x[b]);
                    assert!(rel_close(y[a].hypot(y[b]), af * before, 1e-12), "{cfg:?} pos {pos} pair {i}");
                }
                let untouched = |e: usize| e < cfg.rotary_offset || e >= cfg.rotary_offset + cfg.rotary_dim;
                assert!((0..96).filter(|&e| untouched(e)).all(|e| y[e] == x[e]), "{cfg:?}: outside the rotary part changed");
                if pos == 0 {
                    let rotary = cfg.rotary_offset..cfg.rotary_offset + cfg.rotary_dim;
                    assert!(rotary.clone().all(|e| y[e] == af * x[e]), "position 0 must be the identity: {cfg:?}");
                }
            }
        }
    }

    #[test]
    fn dot_products_depend_only_on_the_relative_position() {
        let mut rng = Rng::new(2);
        for cfg in configs().into_iter().filter(|c| c.attention_factor() == 1.0) {
            let q: Vec<f64> = (0..96).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let k: Vec<f64> = (0..96).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let inv = cfg.inv_freq();
            let dot = |m: i64, n: i64| {
                let (mut a, mut b) = (q.clone(), k.clone());
                rotate_head(&mut a, m, &inv, 1.0, &cfg);
                rotate_head(&mut b, n, &inv, 1.0, &cfg);
                a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>()
            };
            for (m, n) in [(5i64, 3i64), (100, 0), (0, 100), (4097, 4000)] {
                let want = dot(m, n);
                for shift in [1i64, 17, 1000, 65536] {
                    let got = dot(m + shift, n + shift);
                    assert!((got - want).abs() < 1e-9, "{cfg:?}: <q({}), k({})> = {got}, <q({m}), k({n})> = {want}", m + shift, n + shift);
                }
            }
        }
    }

    #[test]
    fn linear_scaling_divides_the_position() {
        let cfg = RopeConfig::new(64, 10000.0);
        let lin = cfg.with_scaling(RopeScaling::Linear { factor: 4.0 });
        let x: Vec<f64> = Rng::new(3).vec::<f32>(64, -1.0, 1.0).iter().map(|v| *v as f64).collect();
        let (mut a, mut b) = (x.clone(), x);
        rotate_head(&mut a, 400, &lin.inv_freq(), 1.0, &lin);
        rotate_head(&mut b, 100, &cfg.inv_freq(), 1.0, &cfg);
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-12));
    }

    #[test]
    fn gptj_is_neox_on_interleaved_pairs() {
        // GPT-J on [a0, b0, a1, b1, ...] equals NeoX on [a0, a1, ..., b0, b1, ...].
        let neox = RopeConfig::new(16, 10000.0);
        let gptj = neox.with_style(RopeStyle::GptJ);
        let x: Vec<f64> = (0..16).map(|i| i as f64 * 0.3 - 2.0).collect();
        let inter: Vec<f64> = (0..16).map(|e| if e % 2 == 0 { x[e / 2] } else { x[8 + e / 2] }).collect();
        let (mut a, mut b) = (x.clone(), inter);
        rotate_head(&mut a, 9, &neox.inv_freq(), 1.0, &neox);
        rotate_head(&mut b, 9, &gptj.inv_freq(), 1.0, &gptj);
        for i in 0..8 {
            assert!((a[i] - b[2 * i]).abs() < 1e-14 && (a[8 + i] - b[2 * i + 1]).abs() < 1e-14);
        }
    }

    // Reference values: HF transformers' `_compute_llama3_parameters` and
    // `_compute_yarn_parameters` (modeling_rope_utils.py; DeepSeek-V3's `yarn_get_mscale`,
    // `yarn_find_correction_range`, `yarn_linear_ramp_mask` are the same formulas) transcribed
    // line by line into plain Python floats (f64) — independently of config.rs — and printed.

    #[test]
    fn llama3_table_matches_the_published_formula() {
        // Llama 3.1 8B: theta 500000, head_dim 128, factor 8, low 1, high 4, original 8192.
        let cfg = RopeConfig::new(128, 500000.0).with_scaling(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_positions: 8192,
        });
        let inv = cfg.inv_freq();
        let want = [
            (0, 1.0),
            (10, 0.12868737343265052),
            (20, 0.016560440080994446),
            (40, 3.428102195952591e-05),
            (45, 1.2297638677963614e-05), // the smooth (medium-frequency) band
            (48, 6.647869871181236e-06),
            (50, 4.411534674558404e-06),
            (63, 3.068925988914511e-07),
        ];
        for (i, w) in want {
            assert!(rel_close(inv[i], w, 1e-12), "inv_freq[{i}] = {}, want {w}", inv[i]);
        }
        assert_eq!(cfg.attention_factor(), 1.0);
    }

    #[test]
    fn yarn_tables_match_the_published_formula() {
        // DeepSeek-V3: qk_rope_head_dim 64, theta 10000, factor 40, original 4096, beta 32/1,
        // mscale = mscale_all_dim = 1 -> attention factor 1; correction range (10, 23).
        let ds = RopeConfig::new(64, 10000.0).with_scaling(RopeScaling::Yarn(Yarn::deepseek_v3()));
        let y = Yarn::deepseek_v3();
        assert_eq!(crate::ops::rope::config::yarn_find_correction_range(&y, 64.0, 10000.0), (10.0, 23.0));
        let inv = ds.inv_freq();
        for (i, w) in [
            (0, 1.0),
            (9, 0.07498942093324558),
            (10, 0.056234132519034905),
            (12, 0.026879360111431223),
            (15, 0.008334508951020777),
            (20, 0.0007905694150420945),
            (23, 3.33380358040831e-05),
            (24, 2.5e-05),
            (31, 3.33380358040831e-06),
        ] {
            assert!(rel_close(inv[i], w, 1e-12), "deepseek inv_freq[{i}] = {}, want {w}", inv[i]);
        }
        assert_eq!(ds.attention_factor(), 1.0);
        // Qwen-style YaRN (no mscale pair): attention factor 0.1 ln 4 + 1.
        let qw = RopeConfig::new(128, 1e6).with_scaling(RopeScaling::Yarn(Yarn::new(4.0, 32768)));
        assert!(rel_close(qw.attention_factor(), 1.138629436111989, 1e-15));
        let inv = qw.inv_freq();
        for (i, w) in [(0, 1.0), (20, 0.01333521432163324), (30, 0.0010643609812470017), (40, 4.445698525097307e-05), (63, 3.102344401879299e-07)] {
            assert!(rel_close(inv[i], w, 1e-12), "qwen inv_freq[{i}] = {}, want {w}", inv[i]);
        }
        // gpt-oss: truncate = false keeps the fractional correction range.
        let go = RopeConfig::new(64, 150000.0).with_scaling(RopeScaling::Yarn(Yarn { truncate: false, ..Yarn::new(32.0, 4096) }));
        assert!(rel_close(go.attention_factor(), 1.3465735902799727, 1e-15));
        let inv = go.inv_freq();
        for (i, w) in [(0, 1.0), (8, 0.050813274815461475), (9, 0.03170569618466377), (17, 0.00012931870124506317), (18, 3.8308812373753384e-05), (31, 3.0235114281192144e-07)] {
            assert!(rel_close(inv[i], w, 1e-12), "gpt-oss inv_freq[{i}] = {}, want {w}", inv[i]);
        }
        // mscale != mscale_all_dim: the ratio of the two mscales.
        let r = RopeConfig::new(64, 10000.0).with_scaling(RopeScaling::Yarn(Yarn { mscale: Some(0.707), ..Yarn::deepseek_v3() }));
        let m = |s: f64| 0.1 * s * 40f64.ln() + 1.0;
        assert!(rel_close(r.attention_factor(), m(0.707) / m(1.0), 1e-15));
    }

    #[test]
    fn dynamic_ntk_matches_the_published_formula() {
        let dy = |seq_len| RopeConfig::new(128, 10000.0).with_scaling(RopeScaling::DynamicNtk { factor: 2.0, original_max_positions: 4096, seq_len });
        let inv = dy(10000).inv_freq();
        for (i, w) in [(0, 1.0), (1, 0.8475170999915892), (32, 0.005020546862817429), (63, 2.9740863992002142e-05)] {
            assert!(rel_close(inv[i], w, 1e-12), "dynamic inv_freq[{i}] = {}, want {w}", inv[i]);
        }
        // Within the original context it is plain RoPE.
        let plain = RopeConfig::new(128, 10000.0).inv_freq();
        assert!(dy(4096).inv_freq().iter().zip(&plain).all(|(a, b)| rel_close(*a, *b, 1e-14)));
        assert!(dy(1).inv_freq().iter().zip(&plain).all(|(a, b)| rel_close(*a, *b, 1e-14)));
    }

    #[test]
    fn configs_are_validated() {
        let ok = RopeConfig::new(64, 10000.0);
        assert!(ok.validate("t", 64).is_ok());
        for bad in [
            RopeConfig::new(63, 10000.0),
            RopeConfig::new(0, 10000.0),
            RopeConfig::new(514, 10000.0),
            RopeConfig::new(64, 1.0),
            RopeConfig::new(64, f64::NAN),
            ok.with_offset(1),
            ok.with_scaling(RopeScaling::Linear { factor: 0.0 }),
            ok.with_scaling(RopeScaling::DynamicNtk { factor: 0.5, original_max_positions: 10, seq_len: 1 }),
            RopeConfig::new(2, 1e4).with_scaling(RopeScaling::DynamicNtk { factor: 2.0, original_max_positions: 10, seq_len: 1 }),
            ok.with_scaling(RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 4.0, high_freq_factor: 1.0, original_max_positions: 8192 }),
            ok.with_scaling(RopeScaling::Yarn(Yarn { beta_fast: 1.0, beta_slow: 32.0, ..Yarn::new(4.0, 4096) })),
            ok.with_scaling(RopeScaling::Yarn(Yarn { attention_factor: Some(-1.0), ..Yarn::new(4.0, 4096) })),
            ok.with_scaling(RopeScaling::Yarn(Yarn::new(4.0, 0))),
        ] {
            assert!(bad.validate("t", 64).is_err(), "{bad:?} should be rejected");
        }
        // The rotary part must fit the head.
        assert!(RopeConfig::new(64, 1e4).with_offset(128).validate("t", 192).is_ok());
        assert!(RopeConfig::new(64, 1e4).with_offset(129).validate("t", 192).is_err());
        assert!(RopeConfig::new(64, 1e4).with_offset(usize::MAX).validate("t", 192).is_err());
    }

    #[test]
    fn qk_norm_rope_is_norm_then_rope() {
        let mut rng = Rng::new(4);
        let (nq, nk, hd, tokens) = (3, 1, 32, 4);
        let q: Vec<f32> = rng.vec(tokens * nq * hd, -2.0, 2.0);
        let k: Vec<f32> = rng.vec(tokens * nk * hd, -2.0, 2.0);
        let (qw, kw): (Vec<f32>, Vec<f32>) = (rng.vec(hd, 0.5, 1.5), rng.vec(hd, 0.5, 1.5));
        let pos = [0i64, 5, 9, 1 << 20];
        let cfg = RopeConfig::new(32, 1e6);
        let norm = RmsNormConfig::new(1e-6);
        let (qa, ka) = qk_norm_rope(&q, &k, &pos, &qw, &kw, norm, &cfg);
        let mut qb = super::super::rms_norm::rms_norm(&q, &qw, norm);
        let mut kb = super::super::rms_norm::rms_norm(&k, &kw, norm);
        rotate_rows(&mut qb, hd, &pos, &cfg);
        rotate_rows(&mut kb, hd, &pos, &cfg);
        assert_eq!((qa, ka), (qb, kb));
        // Token 0 (position 0) is just the norm.
        let n0 = super::super::rms_norm::rms_norm(&q[..hd], &qw, norm);
        let (q0, _) = qk_norm_rope(&q[..hd], &k[..hd], &[0], &qw, &kw, norm, &cfg);
        assert_eq!(q0, n0);
    }
}
