//! Element types: a sealed trait mapping Rust types to the C dtype tag.

use crate::ffi;
use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An element type the kernels take: `f32`, `half::f16`, `half::bf16`.
///
/// Sealed: the set is exactly what the C side dispatches on. The host conversions are what the
/// CPU references use: `from_f32` / `from_f64` round to nearest even, like the kernels' stores.
pub trait DType:
    sealed::Sealed + DeviceRepr + ValidAsZeroBits + Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static
{
    /// The C tag (`wc_dtype`).
    const TAG: ffi::wc_dtype;
    /// Short name used in reports: "f32", "f16", "bf16".
    const NAME: &'static str;
    /// A NaN of this type: outputs are filled with it before a checked run.
    const NAN: Self;
    fn to_f32(self) -> f32;
    fn to_f64(self) -> f64;
    fn from_f32(v: f32) -> Self;
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
}
