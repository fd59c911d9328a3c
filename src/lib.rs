//! warpcore: hand-written, fused CUDA kernels for transformer inference, with safe Rust
//! wrappers and a plain-Rust CPU reference for every op.
//!
//! See README.md for a usage example (compiled as a doc test) and docs/ARCHITECTURE.md for
//! the layout.

#![warn(missing_docs)]

pub mod bench;
pub mod check;
mod device;
mod dtype;
mod error;
// bindgen output: cuda/include/warpcore.h and its family headers document each item.
#[allow(missing_docs)]
pub mod ffi;
pub mod kv_cache;
#[cfg(feature = "model")]
pub mod model;
pub mod ops;
pub mod reference;
pub mod resources;
mod tensor;
#[cfg(any(feature = "attention", feature = "matmul-fp8"))]
mod tma;

pub use device::{driver_present, Device, DeviceInfo, MIN_COMPUTE_CAPABILITY};
pub use dtype::{DType, IndexType, F8E4M3};
pub use error::{Error, Result};
pub use tensor::{contiguous_strides, TensorView, TensorViewMut};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
