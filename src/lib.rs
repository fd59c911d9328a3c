//! warpcore: hand-written, fused CUDA kernels for transformer inference, with safe Rust
//! wrappers and a plain-Rust CPU reference for every op.
//!
//! ```no_run
//! use warpcore::{ops::rms_norm::{rms_norm, RmsNormConfig}, Device, TensorView, TensorViewMut};
//! use half::bf16;
//!
//! # fn main() -> warpcore::Result<()> {
//! let dev = Device::new(0)?;
//! let (tokens, hidden) = (4, 4096);
//! let x = dev.upload(&vec![bf16::from_f32(0.5); tokens * hidden])?;
//! let w = dev.upload(&vec![bf16::from_f32(1.0); hidden])?;
//! let mut out = dev.zeros::<bf16>(tokens * hidden)?;
//! rms_norm(
//!     &dev,
//!     &TensorView::contiguous(x.as_view(), [tokens, hidden])?,
//!     &TensorView::contiguous(w.as_view(), [hidden])?,
//!     &mut TensorViewMut::contiguous(out.as_view_mut(), [tokens, hidden])?,
//!     RmsNormConfig::new(1e-6),
//! )?;
//! let host = dev.download(&out)?; // waits for the kernel
//! assert!((host[0].to_f32() - 1.0).abs() < 1e-2);
//! # Ok(()) }
//! ```

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
pub use dtype::DType;
pub use error::{Error, Result};
pub use tensor::{contiguous_strides, TensorView, TensorViewMut};
