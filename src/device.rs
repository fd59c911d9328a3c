//! `Device`: a CUDA context, the stream warpcore launches on, and what the ops need to know
//! about the GPU.

use crate::{Error, Result};
use cudarc::driver::{sys, CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, ValidAsZeroBits};
use std::collections::hash_map::{Entry, HashMap};
use std::sync::{Arc, Mutex};

/// What warpcore knows about a GPU.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// The CUDA device index (as in `Device::new(ordinal)` and `CUDA_VISIBLE_DEVICES` order).
    pub ordinal: usize,
    /// The driver's product name, e.g. "NVIDIA H200".
    pub name: String,
    /// Streaming multiprocessors.
    pub sm_count: u32,
    /// (major, minor), e.g. (9, 0) for H100/H200.
    pub compute_capability: (u32, u32),
    /// The driver's CUDA version as an integer, e.g. 13000 for 13.0.
    pub driver_version: i32,
    /// Global memory, in bytes.
    pub total_memory: usize,
    /// The most shared memory one block may opt into, in bytes (227 KB on H100/H200, 163 KB on
    /// A100, about 99 KB on sm_86/89/120): some kernels pick their tile by it.
    pub max_shared_per_block_optin: usize,
}

/// A CUDA context and the stream every op is queued on (one stream per `Device`).
///
/// Buffers are cudarc `CudaSlice`s; wrap them in [`crate::TensorView`] / [`crate::TensorViewMut`]
/// to pass them to ops. Ops are asynchronous: call [`Device::synchronize`] (or copy the result
/// back, which synchronizes) before reading results on the host.
///
/// A `Device` (and its clones) also owns the small GPU state some ops keep between launches on
/// its stream (e.g. per-tensor FP8 quantization's grid barrier, 8 KB), allocated by the first
/// call that needs it. When capturing a CUDA graph, make one such call before the capture.
#[derive(Clone, Debug)]
pub struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    /// Zero-filled at allocation, one buffer per op name; each op keeps its own invariant.
    /// (Only the FP8 quantizer, the FP8 GEMM and the ternary GEMM keep state between launches.)
    #[cfg_attr(not(any(feature = "quant-fp8", feature = "matmul-ternary")), allow(dead_code))]
    scratch: Arc<Mutex<HashMap<&'static str, CudaSlice<u32>>>>,
}

/// The oldest architecture the kernels are built for (sm_80, Ampere).
pub const MIN_COMPUTE_CAPABILITY: (u32, u32) = (8, 0);

impl Device {
    /// Opens GPU `ordinal` (its primary context) and uses the context's default stream.
    /// Fails with [`Error::NoDevice`] when there is no driver or no such GPU, and with
    /// [`Error::Unsupported`] on a GPU older than sm_80.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !driver_present() {
            return Err(Error::NoDevice("libcuda (the NVIDIA driver) was not found".into()));
        }
        let count = CudaContext::device_count()? as usize;
        if ordinal >= count {
            return Err(Error::NoDevice(format!("GPU {ordinal} requested, {count} present")));
        }
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.default_stream();
        Self::from_stream(stream)
    }

    /// Opens GPU `ordinal` as [`Device::new`] does, but on a new stream of its own (non-blocking,
    /// owned by cudarc: it lives while any buffer allocated on it does) instead of the legacy
    /// default stream, so that the work queued on it can be captured into CUDA graphs (the
    /// legacy stream cannot be). Turns off cudarc's cross-stream event tracking for the context
    /// first (a context with streams of its own would otherwise record an event for every use
    /// of a buffer, and a capture would wait on events recorded outside it): the buffers of this
    /// process must each be used on one stream, or ordered by the caller. For a process that
    /// works on this one stream, such as `warpcore bench` (whose timings replay calls as graphs,
    /// [`crate::bench::time_calls`]).
    pub fn new_capturable(ordinal: usize) -> Result<Self> {
        let dev = Self::new(ordinal)?;
        // SAFETY: nothing has been allocated in this context through this Device yet; buffers
        // allocated from here on do not record events, and this process orders its own work.
        unsafe { dev.ctx.disable_event_tracking() };
        let stream = dev.ctx.new_stream()?;
        Self::from_stream(stream)
    }

    /// Whether the work queued on this Device's stream can be captured into a CUDA graph: not
    /// on the legacy default stream ([`Device::new`]'s), nor when cudarc synchronizes buffers
    /// across streams by events.
    pub fn capturable(&self) -> bool {
        !self.stream.cu_stream().is_null() && !self.ctx.is_managing_stream_synchronization()
    }

    /// Uses an existing cudarc stream (and its context): warpcore's launches queue on it.
    pub fn from_stream(stream: Arc<CudaStream>) -> Result<Self> {
        let ctx = stream.context().clone();
        let attr = |a| ctx.attribute(a).map(|v| v as u32);
        let cc = (
            attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        );
        if cc < MIN_COMPUTE_CAPABILITY {
            return Err(Error::Unsupported {
                op: "Device::new",
                what: "compute capability (sm_80 or newer needed)",
                value: format!("sm_{}{}", cc.0, cc.1),
            });
        }
        let mut driver_version = 0;
        // SAFETY: cuDriverGetVersion writes one int; the driver library is loaded (ctx exists).
        unsafe { sys::cuDriverGetVersion(&mut driver_version) }.result()?;
        let info = DeviceInfo {
            ordinal: ctx.ordinal(),
            name: ctx.name()?,
            sm_count: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            compute_capability: cc,
            driver_version,
            total_memory: ctx.total_mem()?,
            max_shared_per_block_optin: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)? as usize,
        };
        Ok(Self { ctx, stream, info, scratch: Arc::default() })
    }

    /// The GPU's properties, read once when the `Device` was made.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }
    /// The cudarc context; ops reject buffers from another context with [`Error::WrongDevice`].
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    /// The stream every op is queued on; order your own work (copies, other kernels) on it.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for everything queued on the stream; reports asynchronous kernel errors.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }

    /// Runs `f` with the device address of the op's persistent scratch buffer (`words` u32,
    /// zero-filled when this `Device` first hands it out), holding it exclusively: one launch
    /// at a time queues on it (what `f` queues on this `Device`'s stream), and the stream
    /// orders those launches on the GPU.
    #[cfg_attr(not(any(feature = "quant-fp8", feature = "matmul-ternary")), allow(dead_code))]
    pub(crate) fn with_scratch<R>(&self, op: &'static str, words: usize, f: impl FnOnce(sys::CUdeviceptr) -> Result<R>) -> Result<R> {
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let buf = match scratch.entry(op) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.zeros::<u32>(words)?),
        };
        debug_assert!(buf.len() >= words, "{op}: scratch of {} words, {words} asked", buf.len());
        let (ptr, _guard) = buf.device_ptr_mut(&self.stream);
        f(ptr)
    }

    /// Makes this `Device` use `other`'s scratch buffers (the same context): for a `Device` on
    /// a capture stream whose graphs replay on `other`'s stream, so that what the eager steps
    /// allocated is there during a capture, where allocating is not allowed.
    #[cfg(feature = "model")]
    pub(crate) fn share_scratch(&mut self, other: &Device) {
        self.scratch = other.scratch.clone();
    }

    /// Copies a host slice to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        Ok(self.stream.clone_htod(host)?)
    }

    /// A new zero-filled device buffer of `len` elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        Ok(self.stream.alloc_zeros(len)?)
    }

    /// Copies a device buffer (or view) back to the host; waits for queued work first.
    pub fn download<T: DeviceRepr, S: DevicePtr<T>>(&self, src: &S) -> Result<Vec<T>> {
        Ok(self.stream.clone_dtoh(src)?)
    }
}

/// True when the NVIDIA driver library can be loaded (checked before touching cudarc, which
/// panics without it).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda; no other state.
    unsafe { sys::is_culib_present() }
}
