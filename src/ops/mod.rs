//! Safe wrappers: validate every argument, then launch. Shared validation lives here, once.

#[cfg(feature = "attention")]
pub mod attention;
#[cfg(feature = "elementwise")]
pub mod elementwise;
#[cfg(feature = "rope")]
pub mod kv_cache;
#[cfg(feature = "moe-routing")]
pub mod moe_routing;
#[cfg(feature = "matmul-fp8")]
pub mod matmul_fp8;
#[cfg(feature = "matmul-ternary")]
pub mod matmul_ternary;
#[cfg(feature = "quant-fp8")]
pub mod quant;
#[cfg(feature = "rms-norm")]
pub mod rms_norm;
#[cfg(feature = "rope")]
pub mod rope;

use crate::{ffi, DType, Device, Error, Result};
use cudarc::driver::CudaStream;
use std::sync::Arc;

/// The C ABI's tag of a GLU activation (elementwise's `glu`, quant's `glu_quant_fp8`).
#[cfg(any(feature = "elementwise", feature = "quant-fp8"))]
pub(crate) fn glu_activation_tag(act: crate::reference::mlp::GluActivation) -> ffi::wc_glu_activation {
    use crate::reference::mlp::GluActivation;
    match act {
        GluActivation::Silu => ffi::wc_glu_activation_WC_GLU_SILU,
        GluActivation::GeluTanh => ffi::wc_glu_activation_WC_GLU_GELU_TANH,
        GluActivation::SquaredRelu => ffi::wc_glu_activation_WC_GLU_RELU2,
    }
}

/// The gate and up operands of a GLU (elementwise's `glu`, quant's `glu_quant_fp8`): equal
/// `[rows, cols]` shapes, cols > 0, innermost dense, on `dev`, both sizes within i32. Returns
/// `[rows, cols]`.
#[cfg(any(feature = "elementwise", feature = "quant-fp8"))]
pub(crate) fn check_glu_operands<T: DType>(op: &'static str, dev: &Device, gate: &crate::TensorView<T, 2>, up: &crate::TensorView<T, 2>) -> Result<[usize; 2]> {
    let [rows, cols] = gate.shape();
    check_nonempty(op, "gate (cols)", &[cols])?;
    check_shape(op, "up", &up.shape(), &[rows, cols])?;
    for (arg, strides, stream) in [("gate", gate.strides(), gate.stream()), ("up", up.strides(), up.stream())] {
        check_inner_dense(op, arg, &strides)?;
        check_device(op, arg, dev, stream)?;
    }
    check_fits_i32(op, "rows", rows)?;
    check_fits_i32(op, "cols", cols)?;
    Ok([rows, cols])
}

/// `arg`'s shape must equal `expected`.
pub(crate) fn check_shape(op: &'static str, arg: &'static str, got: &[usize], expected: &[usize]) -> Result<()> {
    if got == expected {
        return Ok(());
    }
    Err(Error::ShapeMismatch { op, arg, expected: format!("{expected:?}"), got: format!("{got:?}") })
}

/// The float types an op takes when it does not take FP8 (bf16, f16, f32).
pub(crate) const FLOAT_DTYPES: &[ffi::wc_dtype] = &[ffi::wc_dtype_WC_BF16, ffi::wc_dtype_WC_F16, ffi::wc_dtype_WC_F32];

/// `T` must be one of the dtypes the op takes.
pub(crate) fn check_dtype<T: DType>(op: &'static str, supported: &[ffi::wc_dtype]) -> Result<()> {
    if supported.contains(&T::TAG) {
        return Ok(());
    }
    Err(Error::Unsupported { op, what: "dtype", value: T::NAME.to_string() })
}

/// `arg` must have no zero-sized dimension.
pub(crate) fn check_nonempty(op: &'static str, arg: &'static str, shape: &[usize]) -> Result<()> {
    if shape.contains(&0) {
        return Err(Error::Empty { op, arg, shape: format!("{shape:?}") });
    }
    Ok(())
}

/// The innermost dimension of `arg` must be dense (stride 1).
pub(crate) fn check_inner_dense(op: &'static str, arg: &'static str, strides: &[usize]) -> Result<()> {
    match strides.last() {
        Some(1) | None => Ok(()),
        Some(s) => Err(Error::Unsupported { op, what: "innermost stride (must be 1)", value: format!("{arg}: {s}") }),
    }
}

/// `arg` must be dense row-major (tables the kernels index by a flat position).
pub(crate) fn check_contiguous(op: &'static str, arg: &'static str, shape: &[usize], strides: &[usize]) -> Result<()> {
    let mut expected = 1usize;
    for (&n, &s) in shape.iter().zip(strides).rev() {
        if n > 1 && s != expected {
            return Err(Error::Unsupported {
                op,
                what: "strides (must be contiguous)",
                value: format!("{arg}: shape {shape:?}, strides {strides:?}"),
            });
        }
        expected = expected.saturating_mul(n);
    }
    Ok(())
}

/// An output's elements must not overlap (each written by one thread): with dims ordered by
/// stride, every stride must be at least the span of the dims inside it.
pub(crate) fn check_no_overlap(op: &'static str, arg: &'static str, shape: &[usize], strides: &[usize]) -> Result<()> {
    let mut dims: Vec<(usize, usize)> = shape.iter().copied().zip(strides.iter().copied()).filter(|&(n, _)| n > 1).collect();
    dims.sort_by_key(|&(_, s)| s);
    let mut span = 1usize;
    for &(n, s) in &dims {
        if s < span {
            return Err(Error::Unsupported {
                op,
                what: "overlapping output strides",
                value: format!("{arg}: shape {shape:?}, strides {strides:?}"),
            });
        }
        span = s.saturating_mul(n);
    }
    Ok(())
}

/// The row stride a kernel is given for `rows` rows of `len` elements: a one-row view's stride
/// is never used (it may be anything, even 0), so it is stated as the row length.
#[cfg_attr(not(any(feature = "attention", feature = "elementwise", feature = "quant-fp8", feature = "matmul-ternary")), allow(dead_code))]
pub(crate) fn row_stride(rows: usize, stride: usize, len: usize) -> usize {
    if rows > 1 {
        stride
    } else {
        len
    }
}

/// Rows of an input, `stride` elements apart and `len` long, that a kernel reads as separate
/// rows: the launchers refuse a stride below the row (overlapping or broadcast rows), so it is
/// refused here by name (one row: any stride).
#[cfg_attr(not(any(feature = "elementwise", feature = "matmul-ternary")), allow(dead_code))]
pub(crate) fn check_rows_apart(op: &'static str, arg: &'static str, rows: usize, stride: usize, len: usize) -> Result<()> {
    if rows > 1 && stride < len {
        return Err(Error::Unsupported { op, what: "row stride (at least the row's length: rows may not overlap)", value: format!("{arg}: {stride} < {len}") });
    }
    Ok(())
}

/// The largest size the kernels index with `int`: `i32::MAX` less a margin, because their loops
/// step a counter past the last index (`c += blockDim.x · unroll`: a few thousand at most) and
/// that step must not wrap (a row of `i32::MAX` columns once could, in argmax_rows and glu).
pub(crate) const MAX_I32_SIZE: usize = i32::MAX as usize - 65_535;

/// `value` must fit the kernels' index type (`i32` for sizes that index within a block/grid),
/// with the loops' margin (`MAX_I32_SIZE`).
pub(crate) fn check_fits_i32(op: &'static str, what: &'static str, value: usize) -> Result<()> {
    if value > MAX_I32_SIZE {
        return Err(Error::Unsupported { op, what, value: format!("{value} (> {MAX_I32_SIZE})") });
    }
    Ok(())
}

/// `eps` must be finite and non-negative.
#[cfg_attr(not(feature = "rms-norm"), allow(dead_code))]
pub(crate) fn check_eps(op: &'static str, eps: f32) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::Unsupported { op, what: "eps", value: eps.to_string() });
    }
    Ok(())
}

/// A device pointer the kernels load or store 16 bytes at a time must be 16-byte aligned.
#[cfg_attr(not(any(feature = "attention", feature = "quant-fp8", feature = "matmul-ternary")), allow(dead_code))]
pub(crate) fn check_aligned(op: &'static str, arg: &'static str, ptr: u64) -> Result<()> {
    if !ptr.is_multiple_of(16) {
        return Err(Error::Misaligned { op, arg, align: 16 });
    }
    Ok(())
}

/// Rows of `T` starting at `ptr`, `row_stride` elements apart, that kernels move in 16-byte
/// vectors: the first row and every row stride must be 16-byte aligned (one row: any stride).
#[cfg_attr(not(any(feature = "quant-fp8", feature = "matmul-ternary")), allow(dead_code))]
pub(crate) fn check_rows_aligned<T>(op: &'static str, arg: &'static str, ptr: u64, rows: usize, row_stride: usize) -> Result<()> {
    check_aligned(op, arg, ptr)?;
    if rows > 1 && !(row_stride * std::mem::size_of::<T>()).is_multiple_of(16) {
        return Err(Error::Misaligned { op, arg, align: 16 });
    }
    Ok(())
}

/// `arg`'s buffer must belong to the device's context.
pub(crate) fn check_device(op: &'static str, arg: &'static str, dev: &Device, stream: &Arc<CudaStream>) -> Result<()> {
    if stream.context().cu_ctx() != dev.context().cu_ctx() {
        return Err(Error::WrongDevice { op, arg });
    }
    Ok(())
}

/// Queues a launcher on the device's stream and turns its status into a `Result`. With the
/// `debug-sync` feature it then waits for the kernel and reports what it hit.
pub(crate) fn launch(op: &'static str, dev: &Device, f: impl FnOnce(ffi::wc_stream) -> ffi::wc_status) -> Result<()> {
    dev.context().bind_to_thread()?;
    let status = f(dev.stream().cu_stream() as ffi::wc_stream);
    check_status(op, status)?;
    if cfg!(feature = "debug-sync") {
        dev.stream().synchronize().map_err(|e| Error::Launch { op, code: e.0 as i32, name: format!("{e:?}") })?;
    }
    Ok(())
}

pub(crate) fn check_status(op: &'static str, status: ffi::wc_status) -> Result<()> {
    if status == ffi::WC_OK as ffi::wc_status {
        return Ok(());
    }
    // SAFETY: wc_status_name returns a static NUL-terminated string for any input.
    let name = unsafe { std::ffi::CStr::from_ptr(ffi::wc_status_name(status)) };
    Err(Error::Launch { op, code: status, name: name.to_string_lossy().into_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_detection() {
        assert!(check_no_overlap("op", "o", &[4, 8], &[8, 1]).is_ok());
        assert!(check_no_overlap("op", "o", &[4, 8], &[16, 1]).is_ok());
        assert!(check_no_overlap("op", "o", &[4, 8], &[4, 1]).is_err());
        assert!(check_no_overlap("op", "o", &[4, 8], &[0, 1]).is_err());
        assert!(check_no_overlap("op", "o", &[1, 8], &[0, 1]).is_ok());
        // [tokens, heads, head_dim] inside a fused QKV row of 12 heads.
        assert!(check_no_overlap("op", "o", &[3, 6, 64], &[768, 64, 1]).is_ok());
        assert!(check_no_overlap("op", "o", &[3, 6, 64], &[768, 32, 1]).is_err());
    }

    #[test]
    fn contiguity() {
        assert!(check_contiguous("op", "t", &[4, 8], &[8, 1]).is_ok());
        assert!(check_contiguous("op", "t", &[4, 8], &[9, 1]).is_err());
        assert!(check_contiguous("op", "t", &[4, 8], &[8, 2]).is_err());
        // Size-1 and empty dims do not constrain their stride.
        assert!(check_contiguous("op", "t", &[1, 8], &[100, 1]).is_ok());
        assert!(check_contiguous("op", "t", &[0, 8], &[3, 1]).is_ok());
        assert!(check_contiguous("op", "t", &[5], &[1]).is_ok());
    }

    #[test]
    fn int_sizes_keep_the_loops_margin() {
        assert!(check_fits_i32("op", "cols", MAX_I32_SIZE).is_ok());
        // A loop stepping 1,024 past the last column of an i32::MAX-wide row would wrap.
        assert!(check_fits_i32("op", "cols", MAX_I32_SIZE + 1).is_err());
        assert!(check_fits_i32("op", "cols", i32::MAX as usize).is_err());
    }

    #[test]
    fn status_names_come_from_the_c_side() {
        let e = check_status("op", ffi::WC_ERR_UNSUPPORTED).unwrap_err();
        assert!(matches!(e, Error::Launch { code: -1, ref name, .. } if name == "WC_ERR_UNSUPPORTED"), "{e}");
        // 1 = cudaErrorInvalidValue (static cudart names it without a driver).
        let e = check_status("op", 1).unwrap_err();
        assert!(e.to_string().contains("cudaErrorInvalidValue"), "{e}");
        assert!(check_status("op", 0).is_ok());
    }
}
