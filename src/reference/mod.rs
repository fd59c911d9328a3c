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
