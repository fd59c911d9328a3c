//! The one error type. Every variant names the op and carries the offending values.

use cudarc::driver::DriverError;

/// Result with warpcore's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a warpcore call can fail with. Bad caller input is reported before any launch,
/// so an op that returns an error has written nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument's shape does not match what the op needs.
    #[error("{op}: `{arg}` has shape {got}, expected {expected}")]
    ShapeMismatch { op: &'static str, arg: &'static str, expected: String, got: String },
    /// A value the op does not support (dtype, head_dim, stride pattern, size limit, ...).
    #[error("{op}: unsupported {what}: {value}")]
    Unsupported { op: &'static str, what: &'static str, value: String },
    /// A pointer or stride that is not aligned as the op requires.
    #[error("{op}: `{arg}` must be aligned to {align} bytes")]
    Misaligned { op: &'static str, arg: &'static str, align: usize },
    /// A zero-sized dimension where the op needs at least one element.
    #[error("{op}: `{arg}` is empty (shape {shape})")]
    Empty { op: &'static str, arg: &'static str, shape: String },
    /// A view's shape and strides reach past the end of its buffer.
    #[error("{op}: `{arg}` needs {needed} elements but its buffer holds {len}")]
    OutOfBounds { op: &'static str, arg: &'static str, needed: usize, len: usize },
    /// A buffer that belongs to a different CUDA context than the [`crate::Device`].
    #[error("{op}: `{arg}` belongs to another CUDA context than the device")]
    WrongDevice { op: &'static str, arg: &'static str },
    /// Indices read from device memory (e.g. KV-cache slots) that were out of range: the kernel
    /// skipped them (nothing outside the buffer was touched) and counted them. Reported under
    /// the `debug-sync` feature, after the kernel ran (the in-range entries were written).
    #[error("{op}: {count} entries of `{arg}` were out of range and skipped")]
    IndexOutOfRange { op: &'static str, arg: &'static str, count: u64 },
    /// The host-side page allocator has too few free pages for a request (nothing allocated).
    #[error("{op}: needs {needed} free pages, {free} left")]
    OutOfPages { op: &'static str, needed: usize, free: usize },
    /// The kernel launch (or, with `debug-sync`, the kernel itself) failed.
    #[error("{op}: kernel failed: {name} (status {code})")]
    Launch { op: &'static str, code: i32, name: String },
    /// A model file could not be read or parsed.
    #[error("{path}: {reason}")]
    Load { path: String, reason: String },
    /// A tensor the model needs is not in its safetensors files.
    #[error("missing tensor `{name}`")]
    MissingTensor { name: String },
    /// No usable CUDA driver or device.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// An error from the CUDA driver API (allocation, copy, synchronisation, ...).
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
}
