//! Gated MLP activations for the CPU model path: `act(gate) · up`, in f64.

/// The gate activation of a gated MLP (config.json `hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GluActivation {
    /// SiLU (swish): x · σ(x) — SwiGLU (Llama, Qwen, Mixtral, DeepSeek).
    Silu,
    /// max(x, 0)² — squared-ReLU GLU (BitNet b1.58 2B4T's `relu2`).
    SquaredRelu,
    /// GELU with the tanh approximation — GeGLU (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

impl GluActivation {
    /// From config.json's `hidden_act` (None for names this crate does not implement).
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "silu" | "swish" => Some(Self::Silu),
            "relu2" => Some(Self::SquaredRelu),
            "gelu_pytorch_tanh" | "gelu_tanh" => Some(Self::GeluTanh),
            _ => None,
        }
    }

    /// The activation at `x` (applied to the gate half; the result multiplies the up half).
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Self::Silu => x / (1.0 + (-x).exp()),
            Self::SquaredRelu => x.max(0.0).powi(2),
            Self::GeluTanh => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh()),
        }
    }
}

/// `act(gate) · up`, elementwise; gate and up have the same shape.
pub fn glu(gate: &[f32], up: &[f32], act: GluActivation) -> Vec<f32> {
    assert_eq!(gate.len(), up.len(), "gate and up must have the same shape");
    gate.iter().zip(up).map(|(&g, &u)| (act.apply(g as f64) * u as f64) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_at_known_points() {
        let s = GluActivation::Silu;
        assert_eq!(s.apply(0.0), 0.0);
        assert!((s.apply(1.0) - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-15);
        assert!((s.apply(-30.0)).abs() < 1e-11);
        assert_eq!(GluActivation::SquaredRelu.apply(-2.0), 0.0);
        assert_eq!(GluActivation::SquaredRelu.apply(3.0), 9.0);
        // GELU(tanh) ≈ x for large x, ≈ 0 for very negative x, 0.8412 at 1.
        let g = GluActivation::GeluTanh;
        assert!((g.apply(1.0) - 0.841192).abs() < 1e-5 && (g.apply(10.0) - 10.0).abs() < 1e-9 && g.apply(-10.0).abs() < 1e-9);
        assert_eq!(glu(&[0.0, 2.0], &[5.0, 0.5], GluActivation::SquaredRelu), vec![0.0, 2.0]);
        assert_eq!(GluActivation::from_hf("silu"), Some(s));
        assert_eq!(GluActivation::from_hf("tanh"), None);
    }
}
