//! CPU oracle for BitNet b1.58's ternary linear layers, as transformers 5.17 runs them
//! (`integrations/bitnet.py`, `AutoBitLinear`): weights in {-1, 0, 1} with one scale per
//! tensor, stored packed four to a byte; activations quantized per token to the int8 range
//! before every product.
//!
//! Quantization makes the layer discontinuous (an f32-vs-f64 difference can move a value across
//! a rounding boundary), so the quantizers replicate transformers' f32 arithmetic exactly, in
//! the order torch.compile lowers it on CPU (checked bit for bit against the compiled
//! `ActQuant` with torch 2.11); the products after them accumulate in f64.

/// Ternary values per packed byte (2 bits each).
pub const VALUES_PER_BYTE: usize = 4;

/// Largest positive and most negative int8 code of an activation.
const ACT_MAX: f32 = 127.0;
const ACT_MIN: f32 = -128.0;
/// Floor on an absmax / absmean before it divides (transformers' `clamp(min=1e-5)`).
const SCALE_FLOOR: f32 = 1e-5;

/// Packs ternary `values` `[rows, cols]` (rows a multiple of 4) into transformers' layout
/// `[rows / 4, cols]`: row `i · rows/4 + p` goes to bits `2i, 2i+1` of packed row `p`, stored as
/// value + 1 (0b00 = −1, 0b01 = 0, 0b10 = 1). The packed rows are blocks of the original, not
/// interleaved neighbours.
pub fn pack(values: &[i8], cols: usize) -> Vec<u8> {
    assert!(cols > 0 && values.len().is_multiple_of(VALUES_PER_BYTE * cols), "values must be [4·n, {cols}]");
    let block = values.len() / VALUES_PER_BYTE;
    let mut packed = vec![0u8; block];
    for (i, part) in values.chunks_exact(block).enumerate() {
        for (byte, &v) in packed.iter_mut().zip(part) {
            assert!((-1..=1).contains(&v), "not ternary: {v}");
            *byte |= ((v + 1) as u8) << (2 * i);
        }
    }
    packed
}

/// Unpacks transformers' layout (see [`pack`]): `packed` `[rows / 4, cols]` → `[rows, cols]`
/// ternary values. None when a 2-bit code is 0b11, which encodes no ternary value.
pub fn unpack(packed: &[u8], cols: usize) -> Option<Vec<i8>> {
    assert!(cols > 0 && packed.len().is_multiple_of(cols), "packed must be [n, {cols}]");
    let mut values = Vec::with_capacity(packed.len() * VALUES_PER_BYTE);
    for i in 0..VALUES_PER_BYTE {
        for &byte in packed {
            let code = (byte >> (2 * i)) & 0b11;
            if code == 0b11 {
                return None;
            }
            values.push(code as i8 - 1);
        }
    }
    Some(values)
}

/// A ternary weight tensor `[n, k]`: `w ≈ values · scale` (the checkpoint's `weight_scale`).
#[derive(Clone, Debug, PartialEq)]
pub struct TernaryWeights {
    /// `[n, k]` row-major, each −1, 0 or 1.
    pub values: Vec<i8>,
    /// The per-tensor scale γ (mean |w|, floored at 1e-5).
    pub scale: f32,
}

/// BitNet b1.58's absmean weight quantization (transformers' `WeightQuant`, the online mode;
/// offline checkpoints store its result): `γ = mean|w|` (floored at 1e-5),
/// `values = clamp(round(w · (1/γ)), −1, 1)` in f32 with ties to even, `scale = γ`.
/// The mean is exact (f64) here; torch sums in f32, so a weight within an ulp of ±γ/2 may round
/// the other way there.
pub fn quantize_weights(w: &[f32]) -> TernaryWeights {
    assert!(!w.is_empty(), "no weights");
    let mean = (w.iter().map(|&x| x.abs() as f64).sum::<f64>() / w.len() as f64) as f32;
    let gamma = mean.max(SCALE_FLOOR);
    let inv = 1.0 / gamma;
    let values = w.iter().map(|&x| (x * inv).round_ties_even().clamp(-1.0, 1.0) as i8).collect();
    TernaryWeights { values, scale: gamma }
}

/// Activations `[m, k]` quantized per row (token): `x ≈ q / scale[row]`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedActivations {
    /// int8 codes `[m, k]` row-major, in [−128, 127].
    pub q: Vec<i8>,
    /// One per row: 127 / absmax.
    pub scale: Vec<f32>,
}

impl QuantizedActivations {
    /// `q / scale` in f32: what transformers' `ActQuant` hands to the product.
    pub fn dequantize(&self) -> Vec<f32> {
        let k = self.q.len() / self.scale.len();
        self.q.chunks_exact(k).zip(&self.scale).flat_map(|(row, &s)| row.iter().map(move |&q| q as f32 / s)).collect()
    }
}

/// transformers' per-token activation quantization (`ActQuant`), in its f32 arithmetic:
/// `scale = (1 / max(absmax, 1e-5)) · 127` — torch.compile lowers the source's `127 / absmax` to
/// a reciprocal and a product, which differs from the quotient in the last bit for some absmax
/// (e.g. 3) — then `q = clamp(round(x · scale), −128, 127)`, rounding ties to even.
pub fn quantize_activations(x: &[f32], k: usize) -> QuantizedActivations {
    assert!(k > 0 && x.len().is_multiple_of(k), "x must be [m, {k}]");
    let mut q = Vec::with_capacity(x.len());
    let mut scale = Vec::with_capacity(x.len() / k);
    for row in x.chunks_exact(k) {
        let absmax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = (1.0 / absmax.max(SCALE_FLOOR)) * ACT_MAX;
        q.extend(row.iter().map(|&v| (v * s).round_ties_even().clamp(ACT_MIN, ACT_MAX) as i8));
        scale.push(s);
    }
    QuantizedActivations { q, scale }
}

/// `AutoBitLinear` in offline mode: `(dequantize(quantize(x)) · valuesᵀ + bias) · scale`, x
/// `[m, k]`, weights `[n, k]`, optional bias `[n]` (scaled with the product, as transformers
/// does) → `[m, n]`. Quantization in f32 as transformers computes it, the product in f64.
pub fn bit_linear(x: &[f32], weights: &TernaryWeights, bias: Option<&[f32]>, k: usize) -> Vec<f32> {
    assert!(k > 0 && weights.values.len().is_multiple_of(k), "weights must be [n, {k}]");
    let n = weights.values.len() / k;
    assert!(bias.is_none_or(|b| b.len() == n), "bias must be [{n}]");
    let xq = quantize_activations(x, k).dequantize();
    super::linear::products(&xq, &weights.values, k, |j, dot| ((dot + bias.map_or(0.0, |b| b[j] as f64)) * weights.scale as f64) as f32)
}

/// What warpcore's `matmul_ternary` computes from quantized activations `act` (`[m, k]`):
/// `out[r, j] = ((Σ_c q[r, c] · v[j, c]) / scale[r] + bias[j]) · w_scale`, the integer sum exact,
/// the rest in f64 → `[m, n]`. Equal to [`bit_linear`] after [`quantize_activations`] up to the
/// f32 rounding of transformers' dequantized activations.
pub fn matmul_ternary(act: &QuantizedActivations, weights: &TernaryWeights, bias: Option<&[f64]>, k: usize) -> Vec<f64> {
    assert!(k > 0 && act.q.len() == act.scale.len() * k, "q must be [m, {k}]");
    assert!(weights.values.len().is_multiple_of(k), "weights must be [n, {k}]");
    let n = weights.values.len() / k;
    assert!(bias.is_none_or(|b| b.len() == n), "bias must be [{n}]");
    // |q · v| <= 128: an i32 sum is exact below 2^24 terms (and vectorises).
    assert!(k < 1 << 24, "k must be below 2^24");
    let mut out = Vec::with_capacity(act.scale.len() * n);
    for (row, &s) in act.q.chunks_exact(k).zip(&act.scale) {
        for (j, w) in weights.values.chunks_exact(k).enumerate() {
            let dot: i32 = row.iter().zip(w).map(|(&q, &v)| q as i32 * v as i32).sum();
            out.push((dot as f64 / s as f64 + bias.map_or(0.0, |b| b[j])) * weights.scale as f64);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Rng;
    use crate::reference::linear::linear;

    #[test]
    fn unpack_matches_transformers_docstring_example_and_round_trips() {
        // transformers 5.17 integrations/bitnet.py, `unpack_weights` docstring (and its
        // `pack_weights` gives these bytes back from the ternary values).
        let packed = [0b1010_0001, 0b0001_1000, 0b1001_0000, 0b0000_1010];
        let want: [i8; 16] = [0, -1, -1, 1, -1, 1, -1, 1, 1, 0, 0, -1, 1, -1, 1, -1];
        assert_eq!(unpack(&packed, 2).unwrap(), want);
        assert_eq!(pack(&want, 2), packed);
        let mut rng = Rng::new(3);
        let values: Vec<i8> = (0..12 * 5).map(|_| (rng.next_u64() % 3) as i8 - 1).collect();
        let packed = pack(&values, 5);
        assert_eq!(packed.len(), 3 * 5);
        assert_eq!(unpack(&packed, 5).unwrap(), values);
        // 0b11 is no ternary value.
        assert_eq!(unpack(&[0b0100_0011], 1), None);
    }

    #[test]
    fn weight_quantization_is_ternary_absmean_with_ties_to_even() {
        // γ = mean(0.5, 1.5, 0, 2) = 1: 0.5 → 0 (ties to even), −1.5 → −2 → −1, 2 → 1.
        let t = quantize_weights(&[0.5, -1.5, 0.0, 2.0]);
        assert_eq!((t.values, t.scale), (vec![0, -1, 0, 1], 1.0));
        let mut rng = Rng::new(5);
        let w: Vec<f32> = (0..4096).map(|_| rng.uniform(-2.0, 2.0) as f32).collect();
        let t = quantize_weights(&w);
        assert!(t.values.iter().all(|v| (-1..=1).contains(v)));
        assert!(t.values.contains(&0) && t.values.contains(&1) && t.values.contains(&-1));
        let mean = w.iter().map(|x| x.abs() as f64).sum::<f64>() / w.len() as f64;
        assert!((t.scale as f64 - mean).abs() <= 1e-7 * mean);
        // Dequantization is the identity within half a step inside the range, the sign outside.
        let g = t.scale as f64;
        for (&x, &v) in w.iter().zip(&t.values) {
            let x = x as f64;
            if x.abs() <= 1.5 * g {
                assert!((x - v as f64 * g).abs() <= 0.5 * g * (1.0 + 1e-6), "{x} → {v}");
            } else {
                assert_eq!(v as f64, x.signum());
            }
        }
    }

    #[test]
    fn activation_quantization_by_hand() {
        // absmax 2 → scale (1/2)·127 = 63.5: 1 → 63.5 → 64 (ties to even), −2 → −127,
        // 0.5 → 31.75 → 32, 0 → 0. A zero row keeps zeros (absmax floored at 1e-5).
        let a = quantize_activations(&[1.0, -2.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0], 4);
        assert_eq!(a.q, vec![64, -127, 32, 0, 0, 0, 0, 0]);
        assert_eq!(a.scale, vec![63.5, 1.27e7]);
        assert_eq!(a.dequantize()[..4], [64.0 / 63.5, -2.0, 32.0 / 63.5, 0.0]);
        // The reciprocal form, not the quotient: they differ in the last bit at absmax 3.
        let s = quantize_activations(&[3.0, 1.0], 2).scale[0];
        assert_eq!(s, (1.0f32 / 3.0) * 127.0);
        assert_ne!(s, 127.0f32 / 3.0);
    }

    #[test]
    fn activation_quantize_dequantize_is_identity_within_half_a_step() {
        let mut rng = Rng::new(11);
        let k = 96;
        let x: Vec<f32> = (0..7 * k).map(|i| (rng.uniform(-2.0, 2.0) * (1 + i / k) as f64) as f32).collect();
        let a = quantize_activations(&x, k);
        let back = a.dequantize();
        for (r, row) in x.chunks_exact(k).enumerate() {
            let s = a.scale[r] as f64;
            let absmax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // The row's largest magnitude maps to ±127 exactly.
            assert!(a.q[r * k..(r + 1) * k].iter().any(|q| q.abs() == 127));
            assert!((absmax as f64 * s - 127.0).abs() < 1e-4);
            for (j, &v) in row.iter().enumerate() {
                assert!((v as f64 - back[r * k + j] as f64).abs() <= (0.5 + 1e-4) / s, "row {r} col {j}");
            }
        }
    }

    #[test]
    fn matmul_ternary_is_bit_linear_on_the_quantized_activations() {
        let mut rng = Rng::new(13);
        let (m, n, k) = (3, 8, 64);
        let x: Vec<f32> = (0..m * k).map(|_| rng.uniform(-3.0, 3.0) as f32).collect();
        let w = quantize_weights(&(0..n * k).map(|_| rng.uniform(-1.0, 1.0) as f32).collect::<Vec<_>>());
        let bias: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let want = bit_linear(&x, &w, Some(&bias), k);
        let bias64: Vec<f64> = bias.iter().map(|&b| b as f64).collect();
        let got = matmul_ternary(&quantize_activations(&x, k), &w, Some(&bias64), k);
        for (g, e) in got.iter().zip(&want) {
            assert!((g - *e as f64).abs() <= 1e-6 * (1.0 + e.abs() as f64), "{g} vs {e}");
        }
        // By hand: q = [64, −127, 32, 0] (scale 63.5) against [0, −1, 1, −1]: 159 / 63.5 · 0.5.
        let act = quantize_activations(&[1.0, -2.0, 0.5, 0.0], 4);
        let w = TernaryWeights { values: vec![0, -1, 1, -1], scale: 0.5 };
        assert_eq!(matmul_ternary(&act, &w, None, 4), vec![159.0 / 63.5 * 0.5]);
    }

    #[test]
    fn bit_linear_by_hand_and_against_the_dense_product() {
        // x = [1, −2, 0.5, 0] → q = [64, −127, 32, 0], scale 63.5. Rows of W: [1, 1, 0, 0] →
        // (64 − 127)/63.5; [0, −1, 1, −1] → (127 + 32)/63.5; bias [1, −1]; weight scale 0.5.
        let w = TernaryWeights { values: vec![1, 1, 0, 0, 0, -1, 1, -1], scale: 0.5 };
        let y = bit_linear(&[1.0, -2.0, 0.5, 0.0], &w, Some(&[1.0, -1.0]), 4);
        // (The dequantized activations are f32, so equal up to their rounding.)
        let want = [(-63.0 / 63.5 + 1.0) * 0.5, (159.0 / 63.5 - 1.0) * 0.5];
        assert!(y.iter().zip(want).all(|(&g, e)| (g as f64 - e).abs() <= 1e-7), "{y:?} vs {want:?}");
        // Any input: the dense product of the dequantized activations and values · scale.
        let mut rng = Rng::new(7);
        let (m, n, k) = (5, 12, 40);
        let x: Vec<f32> = (0..m * k).map(|_| rng.uniform(-2.0, 2.0) as f32).collect();
        let w = quantize_weights(&(0..n * k).map(|_| rng.uniform(-2.0, 2.0) as f32).collect::<Vec<_>>());
        let dense: Vec<f32> = w.values.iter().map(|&v| v as f32 * w.scale).collect();
        let want = linear(&quantize_activations(&x, k).dequantize(), &dense, None, k);
        for (g, e) in bit_linear(&x, &w, None, k).iter().zip(&want) {
            assert!((g - e).abs() <= 1e-6 * (1.0 + e.abs()), "{g} vs {e}");
        }
    }
}
