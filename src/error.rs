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
    ShapeMismatch {
        /// The op that rejected the call (e.g. "rms_norm").
        op: &'static str,
        /// The argument's name in the op's signature.
        arg: &'static str,
        /// The shape the op needed, formatted (e.g. "[4, 4096]", or a pattern with names).
        expected: String,
        /// The shape the argument has, formatted.
        got: String,
    },
    /// A value the op does not support (dtype, head_dim, stride pattern, size limit, ...).
    #[error("{op}: unsupported {what}: {value}")]
    Unsupported {
        /// The op that rejected the call.
        op: &'static str,
        /// What is unsupported, often with the supported range (e.g. "head_dim (at most 512)").
        what: &'static str,
        /// The value given, formatted.
        value: String,
    },
    /// A pointer or stride that is not aligned as the op requires.
    #[error("{op}: `{arg}` must be aligned to {align} bytes")]
    Misaligned {
        /// The op that rejected the call.
        op: &'static str,
        /// The misaligned argument.
        arg: &'static str,
        /// The alignment the op needs, in bytes.
        align: usize,
    },
    /// A zero-sized dimension where the op needs at least one element.
    #[error("{op}: `{arg}` is empty (shape {shape})")]
    Empty {
        /// The op that rejected the call.
        op: &'static str,
        /// The empty argument (sometimes with the dimension, e.g. "x (k)").
        arg: &'static str,
        /// The argument's shape, formatted.
        shape: String,
    },
    /// A view's shape and strides reach past the end of its buffer.
    #[error("{op}: `{arg}` needs {needed} elements but its buffer holds {len}")]
    OutOfBounds {
        /// The op (or view constructor) that rejected the view.
        op: &'static str,
        /// The argument whose view is too large.
        arg: &'static str,
        /// Elements the view spans: 1 + the largest offset it reaches (`usize::MAX` on overflow).
        needed: usize,
        /// Elements in the buffer.
        len: usize,
    },
    /// A buffer that belongs to a different CUDA context than the [`crate::Device`].
    #[error("{op}: `{arg}` belongs to another CUDA context than the device")]
    WrongDevice {
        /// The op that rejected the call.
        op: &'static str,
        /// The argument whose buffer is on the other context.
        arg: &'static str,
    },
    /// Indices read from device memory (e.g. KV-cache slots) that were out of range: the kernel
    /// skipped them (nothing outside the buffer was touched) and counted them. Reported under
    /// the `debug-sync` feature, after the kernel ran (the in-range entries were written).
    #[error("{op}: {count} entries of `{arg}` were out of range and skipped")]
    IndexOutOfRange {
        /// The op whose kernel found the indices.
        op: &'static str,
        /// The index argument (e.g. "slot_mapping").
        arg: &'static str,
        /// How many entries were out of range (and skipped).
        count: u64,
    },
    /// The host-side page allocator has too few free pages for a request (nothing allocated).
    #[error("{op}: needs {needed} free pages, {free} left")]
    OutOfPages {
        /// The allocator call that failed.
        op: &'static str,
        /// Pages the request needs.
        needed: usize,
        /// Pages free in the allocator.
        free: usize,
    },
    /// The kernel launch (or, with `debug-sync`, the kernel itself) failed.
    #[error("{op}: kernel failed: {name} (status {code})")]
    Launch {
        /// The op (or library call, e.g. "cublasGemmEx") that failed.
        op: &'static str,
        /// The status code: a CUDA runtime/driver error, a `WC_ERR_*` code (negative) or a
        /// cuBLAS status.
        code: i32,
        /// The status code's name (e.g. "cudaErrorInvalidValue", "WC_ERR_UNSUPPORTED").
        name: String,
    },
    /// A model file could not be read or parsed.
    #[error("{path}: {reason}")]
    Load {
        /// The file that failed, as given.
        path: String,
        /// What was wrong with it (I/O error, parse error, missing key, ...).
        reason: String,
    },
    /// A tensor the model needs is not in its safetensors files.
    #[error("missing tensor `{name}`")]
    MissingTensor {
        /// The tensor's name in the checkpoint (e.g. "model.layers.0.self_attn.q_proj.weight").
        name: String,
    },
    /// No usable CUDA driver or device.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// An error from the CUDA driver API (allocation, copy, synchronisation, ...).
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
}
