//! Plain-Rust CPU references (the oracles every GPU test compares against). No GPU needed.
//! Inputs are in the kernel's dtype; the math is f64 unless a function says otherwise.

#[cfg(feature = "rms-norm")]
pub mod rms_norm;

#[cfg(feature = "attention")]
pub mod attention;

#[cfg(feature = "quant-fp8")]
pub mod quant;

#[cfg(feature = "matmul-fp8")]
pub mod matmul_fp8;
