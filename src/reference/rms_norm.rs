//! CPU oracle for the RMSNorm family, in f64 on inputs already in the kernel's dtype.

use crate::ops::rms_norm::RmsNormConfig;
use crate::DType;

/// One row: x · rsqrt(mean(x²) + eps) · (weight_offset + weight), in f64.
fn norm_row<T: DType>(x: &[T], weight: &[T], cfg: RmsNormConfig, out: &mut [f64]) {
    let mean_sq = x.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>() / x.len() as f64;
    let rstd = 1.0 / (mean_sq + cfg.eps as f64).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = v.to_f64() * rstd * (cfg.weight_offset as f64 + w.to_f64());
    }
}

/// `rms_norm` on dense rows: x `[num_tokens, hidden]`, weight `[hidden]` → `[num_tokens, hidden]`.
pub fn rms_norm<T: DType>(x: &[T], weight: &[T], cfg: RmsNormConfig) -> Vec<f64> {
    let hidden = weight.len();
    assert!(hidden > 0 && x.len().is_multiple_of(hidden), "x must be [num_tokens, {hidden}]");
    let mut out = vec![0.0; x.len()];
    for (xr, or) in x.chunks_exact(hidden).zip(out.chunks_exact_mut(hidden)) {
        norm_row(xr, weight, cfg, or);
    }
    out
}

/// `fused_add_rms_norm`: returns (the new residual, the normalised output). The residual is
/// `x + residual` added in f32 and rounded once to T, exactly as the kernel stores it; the
/// output normalises that stored residual.
pub fn fused_add_rms_norm<T: DType>(x: &[T], residual: &[T], weight: &[T], cfg: RmsNormConfig) -> (Vec<T>, Vec<f64>) {
    assert_eq!(x.len(), residual.len());
    let sum: Vec<T> = x.iter().zip(residual).map(|(a, b)| T::from_f32(a.to_f32() + b.to_f32())).collect();
    let out = rms_norm(&sum, weight, cfg);
    (sum, out)
}

/// `qk_rms_norm` on dense `[num_tokens, num_q_heads + num_kv_heads, head_dim]`: each head
/// normalised over head_dim, with q_weight for the first num_q_heads heads of a token, else
/// k_weight (head_dim = q_weight.len()).
pub fn qk_rms_norm<T: DType>(
    qk: &[T],
    num_q_heads: usize,
    num_kv_heads: usize,
    q_weight: &[T],
    k_weight: &[T],
    cfg: RmsNormConfig,
) -> Vec<f64> {
    let head_dim = q_weight.len();
    let heads = num_q_heads + num_kv_heads;
    assert!(head_dim > 0 && k_weight.len() == head_dim && heads > 0 && qk.len().is_multiple_of(heads * head_dim));
    let mut out = vec![0.0; qk.len()];
    for (i, (xr, or)) in qk.chunks_exact(head_dim).zip(out.chunks_exact_mut(head_dim)).enumerate() {
        let weight = if i % heads < num_q_heads { q_weight } else { k_weight };
        norm_row(xr, weight, cfg, or);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    fn cfg() -> RmsNormConfig {
        RmsNormConfig::new(1e-6)
    }

    #[test]
    fn unit_rows_are_unchanged_by_unit_weight() {
        // A row whose mean square is 1 is its own normalisation (eps = 0).
        let x = [1.0f32, -1.0, 1.0, -1.0, 2.0, 0.0, 0.0, 0.0];
        let w = [1.0f32; 8];
        let out = rms_norm(&x, &w, RmsNormConfig::new(0.0));
        for (o, v) in out.iter().zip(x) {
            assert!((o - v as f64).abs() < 1e-12, "{o} vs {v}");
        }
    }

    #[test]
    fn output_has_unit_rms_and_is_scale_invariant() {
        let x: Vec<f32> = (0..989).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
        let w = vec![1.0f32; 989];
        let a = rms_norm(&x, &w, RmsNormConfig::new(0.0));
        let rms = (a.iter().map(|v| v * v).sum::<f64>() / a.len() as f64).sqrt();
        assert!((rms - 1.0).abs() < 1e-12);
        let x3: Vec<f32> = x.iter().map(|v| v * 4.0).collect(); // exact in f32
        let b = rms_norm(&x3, &w, RmsNormConfig::new(0.0));
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-9));
    }

    #[test]
    fn gemma_offset_equals_weight_plus_one() {
        let x = [0.5f32, -2.0, 3.0, 0.25];
        let w = [0.1f32, -0.2, 0.3, 0.0];
        let w1: Vec<f32> = w.iter().map(|v| v + 1.0).collect();
        let a = rms_norm(&x, &w, RmsNormConfig::gemma(1e-5));
        let b = rms_norm(&x, &w1, RmsNormConfig::new(1e-5));
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-6));
    }

    #[test]
    fn fused_add_rounds_the_residual_once_and_normalises_it() {
        let x: Vec<bf16> = [1.0f32, 2.0, 3.0, 1.0 / 3.0].iter().map(|&v| bf16::from_f32(v)).collect();
        let r: Vec<bf16> = [0.5f32, -2.0, 1e-3, 1.0 / 7.0].iter().map(|&v| bf16::from_f32(v)).collect();
        let w = vec![bf16::from_f32(1.0); 4];
        let (res, out) = fused_add_rms_norm(&x, &r, &w, cfg());
        for i in 0..4 {
            assert_eq!(res[i], bf16::from_f32(x[i].to_f32() + r[i].to_f32()));
        }
        assert_eq!(out, rms_norm(&res, &w, cfg()));
    }

    #[test]
    fn qk_norm_uses_each_heads_weight() {
        // 2 tokens, 2 q heads + 1 k head of head_dim 2.
        let qk = [1.0f32, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0, 6.0, 6.0];
        let (qw, kw) = ([2.0f32, 2.0], [3.0f32, 3.0]);
        let out = qk_rms_norm(&qk, 2, 1, &qw, &kw, RmsNormConfig::new(0.0));
        assert_eq!(out, vec![2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0]);
        // Equals rms_norm over head-sized rows with the matching weight.
        let q_rows = rms_norm(&qk[0..4], &qw, RmsNormConfig::new(0.0));
        assert_eq!(&out[0..4], &q_rows[..]);
    }
}
