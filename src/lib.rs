//! warpcore: hand-written, fused CUDA kernels for transformer inference, with safe Rust
//! wrappers and a plain-Rust CPU reference for every op.
//!
//! See README.md for a usage example (compiled as a doc test) and docs/ARCHITECTURE.md for
//! the layout.

// A dependent that enables only some families leaves some shared helpers (validation, views)
// unused; the full build (every family) keeps the dead-code lint. Add new families here.
#![cfg_attr(not(all(feature = "rms-norm", feature = "moe-routing")), allow(dead_code))]

pub mod bench;
pub mod check;
mod device;
mod dtype;
mod error;
pub mod ffi;
pub mod ops;
pub mod reference;
pub mod resources;
mod tensor;

pub use device::{driver_present, Device, DeviceInfo, MIN_COMPUTE_CAPABILITY};
pub use dtype::{DType, F8E4M3};
pub use error::{Error, Result};
pub use tensor::{contiguous_strides, TensorView, TensorViewMut};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
