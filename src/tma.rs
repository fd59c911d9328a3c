//! TMA descriptors for the Hopper kernels (cuda/matmul_fp8_sm90.cu, cuda/attention_sm90.cu):
//! every operand is mapped as a 2-D tensor of bytes and loaded in boxes one 128-byte swizzle
//! span wide, the layout the wgmma descriptors read.

use crate::{ffi, Result};
use cudarc::driver::sys;

/// The width of a box row: the 128-byte swizzle span.
pub const SWIZZLE_BYTES: usize = 128;

/// What `cuTensorMapEncodeTiled` gets for one operand: a 2-D uint8 tensor `{row bytes, rows}`
/// (inner dimension first; 16-bit operands are mapped as their bytes too) with the given row
/// stride in bytes, boxes of `{128, box_rows}` bytes, 128-byte swizzle (the layout the wgmma
/// descriptors assume), zero fill out of bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmaBox {
    /// The tensor's size `{row bytes, rows}`, inner dimension first.
    pub dims: [u64; 2],
    /// Bytes between the starts of consecutive rows.
    pub row_stride_bytes: u64,
    /// The box one TMA copy moves, `{128 bytes, box_rows}`.
    pub box_dims: [u32; 2],
}

/// The [`TmaBox`] of an operand with `rows` rows of `row_bytes` bytes, `row_stride_bytes` apart,
/// loaded `box_rows` rows at a time (a tile's rows of one 128-byte swizzle span).
pub fn tma_box(rows: usize, row_bytes: usize, row_stride_bytes: usize, box_rows: usize) -> TmaBox {
    TmaBox { dims: [row_bytes as u64, rows as u64], row_stride_bytes: row_stride_bytes as u64, box_dims: [SWIZZLE_BYTES as u32, box_rows as u32] }
}

/// Encodes a tensor map (driver API through cudarc; needs a context on this thread). The
/// caller has checked `ptr` and the row stride 16-byte aligned and the dims within the driver's
/// limits (at most 2³² per dimension, strides below 2⁴⁰, boxes of at most 256 rows).
pub(crate) fn encode_tma(ptr: u64, b: &TmaBox) -> Result<ffi::wc_tensor_map> {
    use sys::{CUtensorMapDataType as D, CUtensorMapFloatOOBfill as F, CUtensorMapInterleave as I, CUtensorMapL2promotion as L, CUtensorMapSwizzle as S};
    let mut map = sys::CUtensorMap { opaque: [0; 16] };
    let strides = [b.row_stride_bytes];
    let element_strides = [1u32, 1];
    // SAFETY: every array has the rank's length (2; strides 1), `map` is a writable
    // CUtensorMap, the address and stride were checked 16-byte aligned and the dims to fit.
    unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            D::CU_TENSOR_MAP_DATA_TYPE_UINT8,
            2,
            ptr as *mut std::ffi::c_void,
            b.dims.as_ptr(),
            strides.as_ptr(),
            b.box_dims.as_ptr(),
            element_strides.as_ptr(),
            I::CU_TENSOR_MAP_INTERLEAVE_NONE,
            S::CU_TENSOR_MAP_SWIZZLE_128B,
            L::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            F::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    }
    .result()?;
    Ok(ffi::wc_tensor_map { opaque: map.opaque })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_cover_one_swizzle_row() {
        let b = tma_box(1000, 7168, 7168, 128);
        assert_eq!(b, TmaBox { dims: [7168, 1000], row_stride_bytes: 7168, box_dims: [128, 128] });
        // 128 bytes per box row: exactly the 128-byte swizzle span (and one FP8 k-block).
        assert_eq!(b.box_dims[0], 128);
        assert_eq!(tma_box(1, 256, 512, 64).box_dims, [128, 64]);
        // The params structs carry 128-byte aligned tensor maps (CUtensorMap's alignment).
        assert_eq!(std::mem::align_of::<ffi::wc_tensor_map>(), 128);
        assert_eq!(std::mem::size_of::<ffi::wc_tensor_map>(), std::mem::size_of::<sys::CUtensorMap>());
        assert_eq!(std::mem::align_of::<ffi::wc_attention_params>(), 128);
    }
}
