//! The model's dense projections on cuBLAS: `y = x · wᵀ` with row-major x `[m, k]` and the
//! checkpoint's weight layout w `[n, k]` (out_features × in_features), bf16 inputs, f32
//! accumulation, y bf16 (activations) or f32 (router and vocabulary logits).

use crate::ops::{check_device, check_inner_dense, check_shape, row_stride};
use crate::{ffi, DType, Device, Error, Result, TensorView, TensorViewMut};
use cudarc::cublas::{result, sys, CudaBlas};
use half::bf16;

/// A cuBLAS handle on the device's stream (every GEMM queues there, in order with the kernels).
pub struct Gemm {
    blas: CudaBlas,
}

fn cublas_err(e: result::CublasError) -> Error {
    Error::Launch { op: "cublasGemmEx", code: e.0 as i32, name: format!("{e:?}") }
}

impl Gemm {
    /// Fails with `Error::NoDevice` when libcublas cannot be loaded.
    pub fn new(dev: &Device) -> Result<Self> {
        // SAFETY: only tries to dlopen libcublas.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::NoDevice("libcublas (cuBLAS) was not found: put the CUDA toolkit's or PyTorch's lib folder on LD_LIBRARY_PATH".into()));
        }
        Ok(Self { blas: CudaBlas::new(dev.stream().clone()).map_err(cublas_err)? })
    }

    /// Gives cuBLAS `workspace` (on `dev`) for every later call on this handle instead of its
    /// own pool: what a CUDA graph capture needs so that the captured GEMMs allocate nothing.
    /// The buffer must outlive the handle's use.
    pub fn set_workspace(&self, dev: &Device, workspace: &cudarc::driver::CudaSlice<u8>) -> Result<()> {
        dev.context().bind_to_thread()?;
        let (ptr, _guard) = cudarc::driver::DevicePtr::device_ptr(workspace, dev.stream());
        // SAFETY: the handle is live; the buffer is a device allocation of workspace.len() bytes
        // in this context, which the caller keeps alive while the handle is used.
        unsafe { sys::cublasSetWorkspace_v2(*self.blas.handle(), ptr as *mut _, workspace.len()) }.result().map_err(cublas_err)
    }

    /// `y[m, n] = x[m, k] · w[n, k]ᵀ`. x and w: bf16, rows dense (any row stride ≥ k); y: bf16
    /// or f32, rows dense (row stride ≥ n). Zero rows is a no-op.
    pub fn linear<Y: DType>(&self, dev: &Device, x: &TensorView<bf16, 2>, w: &TensorView<bf16, 2>, y: &mut TensorViewMut<Y, 2>) -> Result<()> {
        self.gemm("linear", dev, x, w, y, 0.0)
    }

    /// `y[m, n] += x[m, k] · w[n, k]ᵀ` (f32 accumulation, one rounding of the sum into y), as
    /// [`Gemm::linear`] otherwise: a second branch added into the first's output (DeepSeek's
    /// shared experts onto the routed ones).
    pub fn linear_add<Y: DType>(&self, dev: &Device, x: &TensorView<bf16, 2>, w: &TensorView<bf16, 2>, y: &mut TensorViewMut<Y, 2>) -> Result<()> {
        self.gemm("linear_add", dev, x, w, y, 1.0)
    }

    fn gemm<Y: DType>(&self, op: &'static str, dev: &Device, x: &TensorView<bf16, 2>, w: &TensorView<bf16, 2>, y: &mut TensorViewMut<Y, 2>, beta: f32) -> Result<()> {
        let [m, k] = x.shape();
        let [n, wk] = w.shape();
        check_shape(op, "w", &[wk], &[k])?;
        check_shape(op, "y", &y.shape(), &[m, n])?;
        for (arg, strides) in [("x", x.strides()), ("w", w.strides()), ("y", y.strides())] {
            check_inner_dense(op, arg, &strides)?;
        }
        let y_type = match Y::TAG {
            ffi::wc_dtype_WC_BF16 => sys::cudaDataType_t::CUDA_R_16BF,
            ffi::wc_dtype_WC_F32 => sys::cudaDataType_t::CUDA_R_32F,
            _ => return Err(Error::Unsupported { op, what: "output dtype (bf16 or f32)", value: Y::NAME.into() }),
        };
        for (arg, s) in [("x", x.stream()), ("w", w.stream()), ("y", y.stream())] {
            check_device(op, arg, dev, s)?;
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            return Err(Error::Empty { op, arg: "x (k)", shape: format!("{:?}", x.shape()) });
        }
        // Leading dimensions (a one-row view's stride is stated as the row length).
        let (ldx, ldw, ldy) = (row_stride(m, x.strides()[0], k), row_stride(n, w.strides()[0], k), row_stride(m, y.strides()[0], n));
        for (what, v) in [("m", m), ("n", n), ("k", k), ("x row stride", ldx), ("w row stride", ldw), ("y row stride", ldy)] {
            crate::ops::check_fits_i32(op, what, v)?;
        }
        if ldx < k || ldw < k || ldy < n {
            return Err(Error::Unsupported { op, what: "row strides (overlapping rows)", value: format!("x {ldx}, w {ldw}, y {ldy}") });
        }
        dev.context().bind_to_thread()?;
        let stream = dev.stream();
        let (xp, _gx) = x.device_ptr(stream);
        let (wp, _gw) = w.device_ptr(stream);
        let (yp, _gy) = y.device_ptr_mut(stream);
        let alpha = 1.0f32;
        // Column-major view: yᵀ [n, m] = w [n, k] (stored as wᵀ, k × n, so op T) · xᵀ [k, m].
        // SAFETY: shapes, dense rows, leading dimensions ≥ the row lengths and the context were
        // checked above; the views lie inside their buffers (checked when they were made); the
        // guards keep the buffers' sync events until the call is queued.
        unsafe {
            result::gemm_ex(
                *self.blas.handle(),
                sys::cublasOperation_t::CUBLAS_OP_T,
                sys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                (&alpha) as *const f32 as *const _,
                wp as *const _,
                sys::cudaDataType_t::CUDA_R_16BF,
                ldw as i32,
                xp as *const _,
                sys::cudaDataType_t::CUDA_R_16BF,
                ldx as i32,
                (&beta) as *const f32 as *const _,
                yp as *mut _,
                y_type,
                ldy as i32,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(cublas_err)?;
        if cfg!(feature = "debug-sync") {
            dev.synchronize()?;
        }
        Ok(())
    }
}
