//! Plain-Rust CPU references (the oracles every GPU test compares against). No GPU needed.
//! Inputs are in the kernel's dtype; the math is f64 unless a function says otherwise.

#[cfg(feature = "attention")]
pub mod attention;
pub mod elementwise;
pub mod kv_cache;
pub mod linear;
#[cfg(feature = "matmul-fp8")]
pub mod matmul_fp8;
pub mod matmul_ternary;
#[cfg(feature = "attention")]
pub mod mla;
pub mod mlp;
#[cfg(feature = "moe-routing")]
pub mod moe_routing;
#[cfg(feature = "quant-fp8")]
pub mod quant;
#[cfg(feature = "rms-norm")]
pub mod rms_norm;
#[cfg(feature = "rope")]
pub mod rope;

/// exp(y) for y clamped to [−87, 88], from correctly rounded operations only — common.cuh's
/// `det_exp`, operation for operation and constant for constant (as bits), so both give the
/// same float (moe_gate's sigmoid, sample_rows' weights). NaN stays NaN.
pub fn det_exp(y: f32) -> f32 {
    let y = if y < -87.0 { -87.0 } else { y };
    let y = if y > 88.0 { 88.0 } else { y };
    let n = (y * f32::from_bits(0x3FB8_AA3B)).round_ties_even(); // log2(e)
    let r = n.mul_add(-f32::from_bits(0x3F31_7200), y); // ln2 high part
    let r = n.mul_add(-f32::from_bits(0x35BF_BE8E), r); // ln2 low part
    let mut p = f32::from_bits(0x3950_0D01); // 1/5040
    for c in [0x3AB6_0B61, 0x3C08_8889, 0x3D2A_AAAB, 0x3E2A_AAAB] {
        p = p.mul_add(r, f32::from_bits(c)); // 1/720, 1/120, 1/24, 1/6
    }
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    // n ∈ [−126, 127] (NaN → 0, as the kernel's __float2int_rn): 2^n is a normal float.
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    /// det_exp against f64 exp: within 3 f32 epsilons (relative) over the range sample_rows'
    /// weights use and the sigmoid's; clamped outside [−87, 88].
    #[test]
    fn det_exp_is_within_a_few_ulp_of_exp() {
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (got, want) = (super::det_exp(x) as f64, (x as f64).exp());
            assert!((got - want).abs() <= want * 3.0 * f32::EPSILON as f64, "exp({x}): {got} vs {want}");
        }
        assert_eq!(super::det_exp(-1000.0), super::det_exp(-87.0));
        assert_eq!(super::det_exp(0.0), 1.0);
        assert!(super::det_exp(f32::NAN).is_nan());
    }
}
