//! `TensorView` / `TensorViewMut`: a cudarc view plus a shape and strides (in elements).
//!
//! Any element type works (float data, int32 block tables, FP8 caches). A view is checked when it is made: its shape and strides must stay inside the buffer.
//! Strides may describe gaps (a slice of a fused QKV buffer: token stride > heads · head_dim);
//! ops state which strides they support and reject others with a typed error.

use crate::{Error, Result};
use cudarc::driver::{sys, CudaStream, CudaView, CudaViewMut, DevicePtr, DeviceSlice, SyncOnDrop};
use std::sync::Arc;

/// Read-only view of `R`-dimensional device data.
#[derive(Debug)]
pub struct TensorView<'a, T, const R: usize> {
    data: CudaView<'a, T>,
    shape: [usize; R],
    strides: [usize; R],
}

/// Mutable view of `R`-dimensional device data (op outputs: owned by the caller).
#[derive(Debug)]
pub struct TensorViewMut<'a, T, const R: usize> {
    data: CudaViewMut<'a, T>,
    shape: [usize; R],
    strides: [usize; R],
}

/// Row-major strides of a dense tensor.
pub fn contiguous_strides<const R: usize>(shape: [usize; R]) -> [usize; R] {
    let mut strides = [1usize; R];
    for i in (0..R.saturating_sub(1)).rev() {
        // Saturated: a shape whose product passes usize gives a view the extent check refuses.
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1].max(1));
    }
    strides
}

/// Elements spanned by a shape with strides: 1 + Σ (shape_i − 1) · stride_i (0 if any dim is 0).
fn extent<const R: usize>(shape: &[usize; R], strides: &[usize; R]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().zip(strides).try_fold(1usize, |acc, (&n, &s)| acc.checked_add((n - 1).checked_mul(s)?))
}

fn check_extent<const R: usize>(
    op: &'static str,
    shape: &[usize; R],
    strides: &[usize; R],
    len: usize,
) -> Result<()> {
    match extent(shape, strides) {
        Some(needed) if needed <= len => Ok(()),
        needed => Err(Error::OutOfBounds { op, arg: "data", needed: needed.unwrap_or(usize::MAX), len }),
    }
}

macro_rules! view_common {
    () => {
        /// The size of each dimension, outermost first.
        pub fn shape(&self) -> [usize; R] {
            self.shape
        }
        /// The step between neighbours along each dimension, in elements (not bytes).
        pub fn strides(&self) -> [usize; R] {
            self.strides
        }
        /// Number of elements addressed (the product of the shape).
        pub fn numel(&self) -> usize {
            // (saturating: a view with a zero dimension may have any other sizes)
            if self.shape.contains(&0) {
                0
            } else {
                self.shape.iter().fold(1usize, |a, &n| a.saturating_mul(n))
            }
        }
        /// True when the strides are the row-major strides of the shape.
        pub fn is_contiguous(&self) -> bool {
            self.shape.contains(&0) || self.strides == contiguous_strides(self.shape)
        }
        pub(crate) fn stream(&self) -> &Arc<CudaStream> {
            self.data.stream()
        }
    };
}

impl<'a, T, const R: usize> TensorView<'a, T, R> {
    /// A view with explicit strides (elements). Fails if it reaches past the buffer.
    pub fn new(data: CudaView<'a, T>, shape: [usize; R], strides: [usize; R]) -> Result<Self> {
        check_extent("TensorView::new", &shape, &strides, data.len())?;
        Ok(Self { data, shape, strides })
    }
    /// A dense row-major view.
    pub fn contiguous(data: CudaView<'a, T>, shape: [usize; R]) -> Result<Self> {
        Self::new(data, shape, contiguous_strides(shape))
    }
    view_common!();
    /// Elements `start..start + len` of dimension `dim` (the same strides): a slice of a fused
    /// buffer, or the first 512 elements of MLA's latent-cache rows.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<TensorView<'a, T, R>> {
        const OP: &str = "TensorView::narrow";
        if dim >= R || !matches!(start.checked_add(len), Some(end) if end <= self.shape[dim]) {
            return Err(Error::ShapeMismatch { op: OP, arg: "range", expected: format!("within {:?} (dim {dim})", self.shape), got: format!("{start}..+{len}") });
        }
        let mut shape = self.shape;
        shape[dim] = len;
        // An empty result starts at 0: its offset may be the buffer's end.
        let offset = if shape.contains(&0) { 0 } else { start * self.strides[dim] };
        Self::new(self.data.slice(offset..), shape, self.strides)
    }
    /// The device pointer for a launch; keep the guard alive until the launch is queued.
    pub(crate) fn device_ptr<'s>(&'s self, stream: &'s CudaStream) -> (sys::CUdeviceptr, SyncOnDrop<'s>) {
        self.data.device_ptr(stream)
    }
}

impl<'a, T, const R: usize> TensorViewMut<'a, T, R> {
    /// A view with explicit strides (elements). Fails if it reaches past the buffer.
    pub fn new(data: CudaViewMut<'a, T>, shape: [usize; R], strides: [usize; R]) -> Result<Self> {
        check_extent("TensorViewMut::new", &shape, &strides, data.len())?;
        Ok(Self { data, shape, strides })
    }
    /// A dense row-major view.
    pub fn contiguous(data: CudaViewMut<'a, T>, shape: [usize; R]) -> Result<Self> {
        Self::new(data, shape, contiguous_strides(shape))
    }
    view_common!();
    /// A read-only view of the same elements (to feed one op's output to the next).
    pub fn as_view(&self) -> TensorView<'_, T, R> {
        TensorView { data: self.data.as_view(), shape: self.shape, strides: self.strides }
    }
    /// The device pointer for a launch that writes; keep the guard alive until it is queued.
    pub(crate) fn device_ptr_mut<'s>(&'s mut self, stream: &'s CudaStream) -> (sys::CUdeviceptr, SyncOnDrop<'s>) {
        use cudarc::driver::DevicePtrMut;
        self.data.device_ptr_mut(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_and_extent() {
        assert_eq!(contiguous_strides([3, 4, 5]), [20, 5, 1]);
        assert_eq!(extent(&[3, 4, 5], &[20, 5, 1]), Some(60));
        // Two rows of 4 out of a row stride of 10: 10 + 4.
        assert_eq!(extent(&[2, 4], &[10, 1]), Some(14));
        assert_eq!(extent(&[0, 4], &[10, 1]), Some(0));
        assert_eq!(extent(&[usize::MAX, 2], &[usize::MAX, 1]), None);
        // A shape whose product passes usize saturates (no overflow panic), and its extent is none.
        let s = contiguous_strides([1, 1 << 33, 1 << 33]);
        assert_eq!(s, [usize::MAX, 1 << 33, 1]);
        assert_eq!(extent(&[2, 1 << 33, 1 << 33], &s), None);
    }
}
