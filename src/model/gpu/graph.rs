//! Decode steps as CUDA graphs: one decode step is ~10 launches per layer (plus cuBLAS's), each
//! a few µs of host work and a launch gap on the GPU; replaying the step as one graph costs one
//! launch. [`GpuModel::set_decode_graphs`] turns it on.
//!
//! A graph replays fixed launches: the same kernels, grids and arguments (device pointers and
//! host scalars) every time. What a decode step changes from step to step lives in device
//! buffers the graph reads by address: the index arrays (`Batch::index`: token ids, positions,
//! the block table padded to the batch's fixed stride, sequence lengths, cache slots) and the
//! cache pages. What it changes on the host side is the graph's [`GraphKey`]: the attention plan
//! (its split count grows with the contexts), the RoPE configuration (dynamic NTK depends on
//! the longest sequence), the block table's stride, and the generation of the index and
//! workspace buffers (their addresses). A step whose key equals the held graph's replays it
//! (after `GpuModel::stage` copied its index arrays). A step with a new key runs eagerly (which
//! loads the kernels' modules and lets cuBLAS plan the shapes before any capture); the next
//! step, if its key is the same, is captured and replayed. A key that changes every step
//! never costs a capture.
//!
//! The capture runs on a stream of its own (the legacy default stream, which `Device::new`
//! uses, cannot be captured), through a `Device` and cuBLAS handle on that stream; capturing
//! runs nothing. The graph is launched on the model's stream, in order with everything else
//! there. cuBLAS gets a fixed workspace on the capture handle, so the captured GEMMs allocate
//! nothing. Not captured: the token choice (`argmax_rows` / `sample_rows_each`) and its copy to
//! the host, which follow the replay. When cudarc manages cross-stream events (a context with
//! streams of its own), a capture would wait on events recorded outside it: steps then run
//! eagerly.

use super::{Batch, Exec, GpuModel, Step};
use crate::model::gemm::Gemm;
use crate::ops::attention::AttentionPlan;
use crate::ops::rope::RopeConfig;
use crate::{Device, Result};
use cudarc::driver::{result, sys, CudaGraph, CudaSlice};
use std::sync::{Arc, Mutex};

/// cuBLAS's workspace on the capture handle (NVIDIA's advice for Hopper; any size works).
const BLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// A stream created for capture and destroyed with it (cudarc wraps it without owning it, so
/// that the context does not switch to multi-stream event tracking).
struct CaptureStream(sys::CUstream);

// SAFETY: a CUDA stream handle may be used from any thread of its process.
unsafe impl Send for CaptureStream {}
unsafe impl Sync for CaptureStream {}

impl Drop for CaptureStream {
    fn drop(&mut self) {
        // SAFETY: the stream was created by `GraphCapture::new` and nothing runs on it.
        let _ = unsafe { result::stream::destroy(self.0) };
    }
}

/// The model's capture side (one per model; captures are serialised by its mutex).
pub(super) struct GraphCapture {
    dev: Device,
    gemm: Gemm,
    _blas_workspace: CudaSlice<u8>,
    /// Declared last: destroyed after the handle and device that use it.
    _stream: CaptureStream,
}

impl GraphCapture {
    pub(super) fn new(model_dev: &Device) -> Result<Arc<Mutex<Self>>> {
        let ctx = model_dev.context();
        ctx.bind_to_thread()?;
        let raw = result::stream::create(result::stream::StreamKind::NonBlocking)?;
        let stream = CaptureStream(raw);
        // SAFETY: `raw` belongs to this context and `stream` outlives every user of the wrapper
        // (the device and handle below; graphs keep the wrapper but never use its stream).
        let wrapped = unsafe { ctx.wrap_borrowed_stream(raw) };
        let mut dev = Device::from_stream(wrapped)?;
        // The graphs replay on the model's stream: ops' scratch (split-k's workspace) is the
        // model device's, allocated by the eager step before a capture.
        dev.share_scratch(model_dev);
        let gemm = Gemm::new(&dev)?;
        let workspace = model_dev.zeros::<u8>(BLAS_WORKSPACE_BYTES)?;
        gemm.set_workspace(&dev, &workspace)?;
        Ok(Arc::new(Mutex::new(Self { dev, gemm, _blas_workspace: workspace, _stream: stream })))
    }

    fn exec(&self) -> Exec<'_> {
        Exec { dev: &self.dev, gemm: &self.gemm }
    }
}

/// What a decode graph's launches depend on besides the buffers' contents.
#[derive(Clone, Debug, PartialEq)]
struct GraphKey {
    plan: AttentionPlan,
    rope: RopeConfig,
    table_stride: usize,
    generation: u64,
}

/// An instantiated graph, owned by one batch. It keeps the capture side it was recorded
/// through alive: its GEMM nodes use that cuBLAS handle's workspace.
struct Graph {
    graph: CudaGraph,
    _capture: Arc<Mutex<GraphCapture>>,
}

// SAFETY: CUDA graph objects may be used from any thread as long as calls on one are
// serialised: a batch launches its graph only through `&mut Batch`, and `&Batch` reaches
// nothing of it.
unsafe impl Send for Graph {}
unsafe impl Sync for Graph {}

/// A batch's decode graph and its counts.
#[derive(Default)]
pub(super) struct DecodeGraphs {
    graph: Option<(GraphKey, Graph)>,
    /// The key of the last step that ran eagerly.
    last_eager: Option<GraphKey>,
    pub(super) captures: usize,
    pub(super) replays: usize,
}

impl GpuModel {
    /// Decode steps replayed as CUDA graphs (true) or launched op by op (false, the default),
    /// from the next step of every batch on. The tokens and logits are the same either way
    /// (the graph runs the same launches); only host time and the launch gaps differ. Turning
    /// it on when it is on keeps the capture side (stream, cuBLAS handle and workspace) there is.
    /// With the `debug-sync` feature every step runs eagerly (its checks cannot be captured).
    pub fn set_decode_graphs(&mut self, on: bool) -> Result<()> {
        if !on {
            self.capture = None;
        } else if self.capture.is_none() {
            self.capture = Some(GraphCapture::new(&self.dev)?);
        }
        Ok(())
    }

    /// Whether decode steps run as CUDA graphs ([`GpuModel::set_decode_graphs`]).
    pub fn decode_graphs(&self) -> bool {
        self.capture.is_some()
    }

    /// One decode step through the batch's graph: replayed if its key matches the graph's;
    /// captured and replayed if it matches the step before's (which ran eagerly); else run
    /// eagerly.
    pub(super) fn run_decode_graph(&self, capture: &Arc<Mutex<GraphCapture>>, batch: &mut Batch, step: &Step) -> Result<()> {
        let plan = self.plan(batch, step)?;
        let spans = self.stage(batch, step, &plan)?;
        let key = GraphKey { plan, rope: self.step_rope(step)?, table_stride: step.table.max_pages_per_seq, generation: batch.generation };
        let replay = matches!(&batch.graphs.graph, Some((k, _)) if *k == key);
        if !replay {
            // Eager always where a capture would fail: a tracked context, or debug-sync (its
            // synchronize after every op, and append_kv's read-back of its error count, are
            // refused inside a capture).
            let eager_only = self.dev.context().is_managing_stream_synchronization() || cfg!(feature = "debug-sync");
            if eager_only || batch.graphs.last_eager.as_ref() != Some(&key) {
                self.launch_step(self.exec(), batch, step, &key.plan, &spans)?;
                batch.graphs.last_eager = Some(key);
                return Ok(());
            }
            let cap = capture.lock().unwrap_or_else(|e| e.into_inner());
            let graph = capture_step(&cap, |ex| self.launch_step(ex, batch, step, &key.plan, &spans))?;
            batch.graphs.graph = Some((key, Graph { graph, _capture: capture.clone() }));
            batch.graphs.last_eager = None;
            batch.graphs.captures += 1;
        }
        let (_, graph) = batch.graphs.graph.as_ref().expect("a graph was held or captured");
        self.dev.context().bind_to_thread()?;
        // SAFETY: the graph belongs to this context; every buffer it reads or writes is owned by
        // the batch or the model (the key's generation changes whenever the batch reallocates
        // one), both alive for this call.
        unsafe { result::graph::launch(graph.graph.cu_graph_exec(), self.dev.stream().cu_stream()) }?;
        batch.graphs.replays += 1;
        Ok(())
    }
}

/// Records `f`'s launches on the capture stream into an instantiated graph; nothing runs. The
/// capture is ended on every path (an error inside `f` leaves the stream usable).
fn capture_step(cap: &GraphCapture, f: impl FnOnce(Exec) -> Result<()>) -> Result<CudaGraph> {
    let stream = cap.dev.stream();
    stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
    let queued = f(cap.exec());
    let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
    queued?;
    ended?.ok_or_else(|| crate::Error::Unsupported { op: "GpuModel::decode (CUDA graph)", what: "captured step", value: "empty".into() })
}

// A model and its batches may move to (and a model be shared with) other threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<GpuModel>();
    send_sync::<Batch>();
};

impl Batch {
    /// Decode graphs this batch captured and replayed ([`GpuModel::set_decode_graphs`]).
    pub fn graph_counts(&self) -> (usize, usize) {
        (self.graphs.captures, self.graphs.replays)
    }
}
