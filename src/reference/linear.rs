//! Dense projections for the CPU model path: `y = x · Wᵀ (+ b)`, f64 accumulation.

/// x `[m, k]`, weight `[n, k]` (the checkpoint layout: out_features × in_features), optional
/// bias `[n]` → `[m, n]`.
pub fn linear(x: &[f32], weight: &[f32], bias: Option<&[f32]>, k: usize) -> Vec<f32> {
    assert!(k > 0 && x.len() % k == 0 && weight.len() % k == 0, "x [m, {k}] and weight [n, {k}]");
    let n = weight.len() / k;
    assert!(bias.is_none_or(|b| b.len() == n), "bias must be [{n}]");
    let mut out = Vec::with_capacity(x.len() / k * n);
    for row in x.chunks_exact(k) {
        for (j, w) in weight.chunks_exact(k).enumerate() {
            let dot: f64 = row.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum();
            out.push((dot + bias.map_or(0.0, |b| b[j] as f64)) as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_with_bias() {
        // x [2, 3], W [2, 3]
        let x = [1.0, 2.0, 3.0, -1.0, 0.0, 1.0];
        let w = [1.0, 0.0, 0.0, 0.5, 0.5, 0.5];
        assert_eq!(linear(&x, &w, None, 3), vec![1.0, 3.0, -1.0, 0.0]);
        assert_eq!(linear(&x, &w, Some(&[1.0, -1.0]), 3), vec![2.0, 2.0, 0.0, -1.0]);
    }
}
