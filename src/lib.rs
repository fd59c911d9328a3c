//! warpcore: hand-written, fused CUDA kernels for transformer inference, with safe Rust
//! wrappers and a plain-Rust CPU reference for every op.
//!
//! See README.md for a usage example (compiled as a doc test) and docs/ARCHITECTURE.md for
//! the layout.

// With no kernel family enabled (`--no-default-features`), the plumbing the families share
// (ops::launch, the check_* helpers, TensorView's device pointers) has no user.
#![cfg_attr(not(any(feature = "rms-norm", feature = "rope")), allow(dead_code))]

pub mod bench;
pub mod check;
mod device;
mod dtype;
mod error;
pub mod ffi;
pub mod kv_cache;
pub mod ops;
pub mod reference;
pub mod resources;
mod tensor;

pub use device::{driver_present, Device, DeviceInfo, MIN_COMPUTE_CAPABILITY};
pub use dtype::{DType, IndexType, F8E4M3};
pub use error::{Error, Result};
pub use tensor::{contiguous_strides, TensorView, TensorViewMut};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
