//! Element types: a sealed trait mapping Rust types to the C dtype tag.

use crate::ffi;
use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
    impl Sealed for super::F8E4M3 {}
    pub trait SealedIndex {}
    impl SealedIndex for i32 {}
    impl SealedIndex for i64 {}
}

/// An integer type of index arrays the kernels read (positions, KV-cache slot mappings): `i32`
/// or `i64`. Sealed; the kernels take either width (a run-time flag, no extra instantiations).
pub trait IndexType: sealed::SealedIndex + DeviceRepr + ValidAsZeroBits + Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// True for `i64`.
    const IS_I64: bool;
    /// Short name used in reports: "i32", "i64".
    const NAME: &'static str;
    /// The value widened to `i64` (lossless).
    fn to_i64(self) -> i64;
    /// `v` if it fits, else None.
    fn from_i64(v: i64) -> Option<Self>;
}

impl IndexType for i32 {
    const IS_I64: bool = false;
    const NAME: &'static str = "i32";
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Option<Self> {
        i32::try_from(v).ok()
    }
}

impl IndexType for i64 {
    const IS_I64: bool = true;
    const NAME: &'static str = "i64";
    fn to_i64(self) -> i64 {
        self
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
}

/// An element type warpcore stores: `f32`, `half::f16`, `half::bf16`, [`F8E4M3`].
///
/// Sealed: the set is exactly what the C side knows (`wc_dtype`). Each op lists the dtypes it
/// takes (`ops::check_dtype`); others get `Error::Unsupported` before any launch. The host
/// conversions are what the CPU references use: `from_f32` / `from_f64` round to nearest even,
/// like the kernels' stores (F8E4M3 also saturates to ±448, like `__NV_SATFINITE`).
pub trait DType:
    sealed::Sealed + DeviceRepr + ValidAsZeroBits + Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static
{
    /// The C tag (`wc_dtype`).
    const TAG: ffi::wc_dtype;
    /// Short name used in reports: "f32", "f16", "bf16".
    const NAME: &'static str;
    /// A NaN of this type: outputs are filled with it before a checked run.
    const NAN: Self;
    /// The value as `f32` (exact).
    fn to_f32(self) -> f32;
    /// The value as `f64` (exact).
    fn to_f64(self) -> f64;
    /// `v` rounded to this type (nearest even; F8E4M3 saturates to ±448).
    fn from_f32(v: f32) -> Self;
    /// `v` rounded to this type in one step, not via `f32` (nearest even; F8E4M3 saturates).
    fn from_f64(v: f64) -> Self;
}

impl DType for f32 {
    const TAG: ffi::wc_dtype = ffi::wc_dtype_WC_F32;
    const NAME: &'static str = "f32";
    const NAN: Self = f32::NAN;
    fn to_f32(self) -> f32 {
        self
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

macro_rules! half_dtype {
    ($t:ty, $tag:expr, $name:expr) => {
        impl DType for $t {
            const TAG: ffi::wc_dtype = $tag;
            const NAME: &'static str = $name;
            const NAN: Self = <$t>::NAN;
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
            fn to_f64(self) -> f64 {
                <$t>::to_f64(self)
            }
            fn from_f32(v: f32) -> Self {
                <$t>::from_f32(v)
            }
            fn from_f64(v: f64) -> Self {
                <$t>::from_f64(v)
            }
        }
    };
}
half_dtype!(f16, ffi::wc_dtype_WC_F16, "f16");
half_dtype!(bf16, ffi::wc_dtype_WC_BF16, "bf16");

/// FP8 e4m3 ("e4m3fn": 1 sign, 4 exponent bits with bias 7, 3 mantissa bits; no infinities;
/// NaN = 0x7F / 0xFF; largest finite 448; smallest subnormal 2⁻⁹). The bits as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct F8E4M3(pub u8);

// SAFETY: a plain byte; every bit pattern (including 0) is a valid value.
unsafe impl DeviceRepr for F8E4M3 {}
unsafe impl ValidAsZeroBits for F8E4M3 {}

impl F8E4M3 {
    /// Largest finite value.
    pub const MAX: f32 = 448.0;

    /// Round to nearest even, saturating finite overflow (and ±inf) to ±448; NaN stays NaN.
    pub fn from_f64_sat(v: f64) -> Self {
        if v.is_nan() {
            return Self(0x7F);
        }
        let sign = if v.is_sign_negative() { 0x80u8 } else { 0 };
        let a = v.abs();
        let round_even = |x: f64| {
            let r = x.round();
            if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 { r - 1.0 } else { r }
        };
        if a >= Self::MAX as f64 {
            return Self(sign | 0x7E);
        }
        let min_normal = 2f64.powi(-6);
        if a < min_normal {
            // Subnormals are multiples of 2^-9; q = 8 is exactly the smallest normal (bits 0x08).
            return Self(sign | round_even(a * 512.0) as u8);
        }
        let e = a.log2().floor() as i32;
        // log2 can be off by one near powers of two: fix e so that 2^e <= a < 2^(e+1).
        let e = if 2f64.powi(e) > a { e - 1 } else if 2f64.powi(e + 1) <= a { e + 1 } else { e };
        let mut q = round_even((a / 2f64.powi(e) - 1.0) * 8.0) as i32;
        let mut e = e;
        if q == 8 {
            q = 0;
            e += 1;
        }
        let bits = ((e + 7) << 3) | q;
        Self(sign | if bits > 0x7E { 0x7E } else { bits as u8 })
    }

    /// The exact value (0x7F / 0xFF decode to NaN).
    pub fn to_f64(self) -> f64 {
        let sign = if self.0 & 0x80 != 0 { -1.0 } else { 1.0 };
        let (e, m) = ((self.0 >> 3) & 0xF, self.0 & 0x7);
        if e == 0xF && m == 0x7 {
            return f64::NAN;
        }
        if e == 0 {
            sign * m as f64 * 2f64.powi(-9)
        } else {
            sign * (1.0 + m as f64 / 8.0) * 2f64.powi(e as i32 - 7)
        }
    }
}

impl DType for F8E4M3 {
    const TAG: ffi::wc_dtype = ffi::wc_dtype_WC_E4M3;
    const NAME: &'static str = "e4m3";
    const NAN: Self = F8E4M3(0x7F);
    fn to_f32(self) -> f32 {
        self.to_f64() as f32
    }
    fn to_f64(self) -> f64 {
        F8E4M3::to_f64(self)
    }
    fn from_f32(v: f32) -> Self {
        Self::from_f64_sat(v as f64)
    }
    fn from_f64(v: f64) -> Self {
        Self::from_f64_sat(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-8 is halfway between two bf16 neighbours: ties go to the even one (1.0).
        assert_eq!(bf16::from_f64(1.0 + 2f64.powi(-8)).to_f64(), 1.0);
        assert_eq!(bf16::from_f64(1.0 + 3.0 * 2f64.powi(-8)).to_f64(), 1.0 + 2f64.powi(-6));
        assert_eq!(f16::from_f32(65504.0).to_f32(), 65504.0);
        assert!(bf16::NAN.to_f32().is_nan() && f16::NAN.to_f32().is_nan() && f32::NAN.is_nan());
    }

    #[test]
    fn e4m3_round_trips_every_code_and_rounds_to_nearest_even() {
        for b in 0..=255u8 {
            let v = F8E4M3(b);
            if v.to_f64().is_nan() {
                assert!(b & 0x7F == 0x7F);
                continue;
            }
            let back = F8E4M3::from_f64(v.to_f64());
            // -0.0 and 0.0 keep their sign bit.
            assert_eq!(back, v, "code {b:#04x} -> {} -> {:#04x}", v.to_f64(), back.0);
        }
        assert_eq!(F8E4M3(0x7E).to_f64(), 448.0);
        assert_eq!(F8E4M3(0x01).to_f64(), 2f64.powi(-9));
        assert_eq!(F8E4M3(0x08).to_f64(), 2f64.powi(-6));
        // Saturation, not NaN, on overflow.
        assert_eq!(F8E4M3::from_f64(1e6), F8E4M3(0x7E));
        assert_eq!(F8E4M3::from_f64(f64::NEG_INFINITY), F8E4M3(0xFE));
        assert_eq!(F8E4M3::from_f64(464.0), F8E4M3(0x7E));
        // Ties to even: 1 + 1/16 lies halfway between 1 (m=0) and 1.125 (m=1): even is 1.
        assert_eq!(F8E4M3::from_f64(1.0625).to_f64(), 1.0);
        assert_eq!(F8E4M3::from_f64(1.1875).to_f64(), 1.25);
        // Subnormal ties: 1.5 * 2^-9 -> 2 * 2^-9.
        assert_eq!(F8E4M3::from_f64(1.5 * 2f64.powi(-9)).0, 2);
        assert_eq!(F8E4M3::from_f64(0.5 * 2f64.powi(-9)).0, 0);
        // Rounding up across a binade: 1.9375 (halfway 1.875..2.0, odd m=7) -> 2.0.
        assert_eq!(F8E4M3::from_f64(1.9375).to_f64(), 2.0);
        assert!(F8E4M3::NAN.to_f32().is_nan() && F8E4M3::from_f32(f32::NAN).to_f32().is_nan());
    }
}
