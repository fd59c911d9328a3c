// driver.cpp — a stand-in for libcuda and libcublas, so that the Rust crate's GPU tests run on the
// CPU against the emulated kernels (tools/host-emu/cargo-test). Linked with the rewritten kernel
// sources into libwarpcore_emu.so; libcuda.so and libcublas.so are symlinks to that library, so
// cudarc's dlopen finds the same copy (one shim state, one allocation table).
//
// The model: one device (EMU_CC, EMU_SMS as in shim.h) whose memory is host memory. Everything
// runs at the call in the calling thread: a stream is a serial order, which is one legal schedule
// of the real asynchronous one (launches are already synchronous in the shim). So:
//   * allocations are host blocks (256-byte aligned, filled with 0xFF like fresh GPU memory is
//     filled with garbage); ASan (LD_PRELOAD, see cargo-test) puts red zones around them and the
//     kernels are instrumented, so an out-of-bounds device access is reported where it happens;
//   * copies and memsets check that the device range lies inside one live allocation
//     (CUDA_ERROR_INVALID_VALUE otherwise, and a report);
//   * errors the shim counted (emu::errors: hazards, bad collectives, deadlocks) are returned as
//     CUDA_ERROR_LAUNCH_FAILED by the next synchronizing call (stream / context / event
//     synchronize, device-to-host copy), as an asynchronous kernel error would be;
//   * events record a host timestamp (cuEventElapsedTime works, and measures the emulation);
//   * cuTensorMapEncodeTiled takes the 2-D uint8 maps the FP8 GEMM uses (shim_sm90.h's format);
//   * cuBLAS: cublasGemmEx in f32 / bf16 / f16 with f32 compute, column-major as documented;
//   * stream capture into graphs (cuStreamBeginCapture … cuGraphLaunch): while a thread captures
//     a stream, kernels, memsets, device-to-device copies and GEMMs queued on that stream are
//     recorded (shim.h's emu::captured) and a graph launch runs them in order. What CUDA refuses
//     in a capture (THREAD_LOCAL mode) is refused here too and invalidates it: allocation and
//     freeing, copies to or from the host, synchronizing, waiting on an event; capturing the
//     legacy default stream is refused.
// Anything else cudarc asks for is missing on purpose: cudarc panics naming the symbol.
#include "shim.h"

#include <cuda.h>

#include <chrono>
#include <map>
#include <mutex>

namespace {

std::mutex g_mutex;                     // the allocation table
std::map<uintptr_t, size_t> g_allocs;  // base -> bytes
long g_seen_errors = 0;                // emu::errors already reported through a CUresult
thread_local CUcontext t_current = nullptr;

struct Ctx {
  int dummy;
} g_primary;
struct Stream {
  int dummy;
};
struct Event {
  std::chrono::steady_clock::time_point at{};
  bool recorded = false;
};

// The shim's error count, turned into the asynchronous error a synchronizing call returns.
CUresult sync_result() {
  std::lock_guard<std::mutex> g(g_mutex);
  const long now = emu::errors.load();
  if (now == g_seen_errors) return CUDA_SUCCESS;
  g_seen_errors = now;
  fprintf(stderr, "host-emu driver: %ld emulation error(s) reported by the kernels (see above)\n", now);
  return CUDA_ERROR_LAUNCH_FAILED;
}

// True when [p, p + n) lies inside one live allocation.
bool inside(CUdeviceptr p, size_t n, const char* what) {
  std::lock_guard<std::mutex> g(g_mutex);
  auto it = g_allocs.upper_bound(static_cast<uintptr_t>(p));
  if (it != g_allocs.begin()) {
    --it;
    if (p >= it->first && p + n <= it->first + it->second) return true;
  }
  fprintf(stderr, "host-emu driver: %s of %zu bytes at 0x%llx outside every allocation\n", what, n,
          static_cast<unsigned long long>(p));
  emu::errors.fetch_add(1);
  return false;
}

CUresult alloc(CUdeviceptr* p, size_t bytes) {
  if (p == nullptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  void* m = nullptr;
  if (posix_memalign(&m, 256, bytes) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
  memset(m, 0xFF, bytes);
  std::lock_guard<std::mutex> g(g_mutex);
  g_allocs[reinterpret_cast<uintptr_t>(m)] = bytes;
  *p = reinterpret_cast<CUdeviceptr>(m);
  return CUDA_SUCCESS;
}

CUresult release(CUdeviceptr p) {
  if (p == 0) return CUDA_SUCCESS;
  std::lock_guard<std::mutex> g(g_mutex);
  auto it = g_allocs.find(static_cast<uintptr_t>(p));
  if (it == g_allocs.end()) return CUDA_ERROR_INVALID_VALUE;
  g_allocs.erase(it);
  free(reinterpret_cast<void*>(p));
  return CUDA_SUCCESS;
}

CUresult htod(CUdeviceptr dst, const void* src, size_t n) {
  if (n == 0) return CUDA_SUCCESS;
  if (!inside(dst, n, "host-to-device copy")) return CUDA_ERROR_INVALID_VALUE;
  memcpy(reinterpret_cast<void*>(dst), src, n);
  return CUDA_SUCCESS;
}

CUresult dtoh(void* dst, CUdeviceptr src, size_t n) {
  if (const CUresult r = sync_result(); r != CUDA_SUCCESS) return r;
  if (n == 0) return CUDA_SUCCESS;
  if (!inside(src, n, "device-to-host copy")) return CUDA_ERROR_INVALID_VALUE;
  memcpy(dst, reinterpret_cast<const void*>(src), n);
  return CUDA_SUCCESS;
}

CUresult dtod(CUdeviceptr dst, CUdeviceptr src, size_t n) {
  if (n == 0) return CUDA_SUCCESS;
  if (!inside(dst, n, "device-to-device copy (destination)") || !inside(src, n, "device-to-device copy (source)"))
    return CUDA_ERROR_INVALID_VALUE;
  memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
  return CUDA_SUCCESS;
}

CUresult memset8(CUdeviceptr dst, unsigned char v, size_t n) {
  if (n == 0) return CUDA_SUCCESS;
  if (!inside(dst, n, "memset")) return CUDA_ERROR_INVALID_VALUE;
  memset(reinterpret_cast<void*>(dst), v, n);
  return CUDA_SUCCESS;
}


// A call CUDA refuses while this thread captures (THREAD_LOCAL mode): reported, and the capture
// is invalidated (cuStreamEndCapture then fails).
bool t_capture_invalid = false;
bool refused_in_capture(const char* what) {
  if (emu::captured == nullptr) return false;
  fprintf(stderr, "host-emu driver: %s during a stream capture (refused; the capture is invalidated)\n", what);
  t_capture_invalid = true;
  return true;
}

}  // namespace

struct CUgraph_st {
  std::vector<std::function<void()>> nodes;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> nodes;
};

namespace {
}  // namespace

extern "C" {

// ------------------------------------------------------------------ initialisation and device
CUresult cuInit(unsigned int) { return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int* v) {
  *v = 13000;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetCount(int* n) {
  *n = 1;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGet(CUdevice* d, int ordinal) {
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *d = 0;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
  snprintf(name, static_cast<size_t>(len), "warpcore host emulation (sm_%d, %d SMs)", emu_cc(), emu_sms());
  return CUDA_SUCCESS;
}
CUresult cuDeviceTotalMem(size_t* bytes, CUdevice) {
  *bytes = size_t{16} << 30;
  return CUDA_SUCCESS;
}
// The attributes the kernels' launchers also ask the runtime for are answered by the shim's
// cudaDeviceGetAttribute (one emulated device); memory pools and warp size here.
CUresult cuDeviceGetAttribute(int* v, CUdevice_attribute a, CUdevice) {
  cudaDeviceAttr r;
  switch (a) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: r = cudaDevAttrComputeCapabilityMajor; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: r = cudaDevAttrComputeCapabilityMinor; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: r = cudaDevAttrMultiProcessorCount; break;
    case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH: r = cudaDevAttrCooperativeLaunch; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: r = cudaDevAttrMaxSharedMemoryPerBlockOptin; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: *v = 1; return CUDA_SUCCESS;  // cudarc allocates with cuMemAllocAsync
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *v = 32; return CUDA_SUCCESS;
    default:
      fprintf(stderr, "host-emu driver: cuDeviceGetAttribute(%d) is not emulated\n", static_cast<int>(a));
      return CUDA_ERROR_INVALID_VALUE;
  }
  return cudaDeviceGetAttribute(v, r, 0) == cudaSuccess ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// ------------------------------------------------------------------ contexts
CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice) {
  *c = reinterpret_cast<CUcontext>(&g_primary);
  return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease(CUdevice) { return CUDA_SUCCESS; }
// A non-primary context (tests give buffers of another context to an op, which must refuse them).
CUresult cuCtxCreate(CUcontext* c, CUctxCreateParams*, unsigned int, CUdevice) {
  *c = reinterpret_cast<CUcontext>(new Ctx{});
  return CUDA_SUCCESS;
}
CUresult cuCtxDestroy(CUcontext c) {
  if (c == reinterpret_cast<CUcontext>(&g_primary)) return CUDA_ERROR_INVALID_CONTEXT;
  if (t_current == c) t_current = nullptr;
  delete reinterpret_cast<Ctx*>(c);
  return CUDA_SUCCESS;
}
CUresult cuCtxSetCurrent(CUcontext c) {
  t_current = c;
  return CUDA_SUCCESS;
}
CUresult cuCtxGetCurrent(CUcontext* c) {
  *c = t_current;
  return CUDA_SUCCESS;
}
CUresult cuCtxGetDevice(CUdevice* d) {
  *d = 0;
  return CUDA_SUCCESS;
}
CUresult cuCtxSynchronize() {
  if (refused_in_capture("cuCtxSynchronize")) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return sync_result();
}

// ------------------------------------------------------------------ streams and events
CUresult cuStreamCreate(CUstream* s, unsigned int) {
  *s = reinterpret_cast<CUstream>(new Stream{});
  return CUDA_SUCCESS;
}
CUresult cuStreamCreateWithPriority(CUstream* s, unsigned int flags, int) { return cuStreamCreate(s, flags); }
CUresult cuStreamDestroy(CUstream s) {
  delete reinterpret_cast<Stream*>(s);
  return CUDA_SUCCESS;
}
CUresult cuStreamSynchronize(CUstream) {
  if (refused_in_capture("cuStreamSynchronize")) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return sync_result();
}
CUresult cuStreamQuery(CUstream) { return CUDA_SUCCESS; }
// Events recorded in the capture are not modelled: a capture waits on none.
CUresult cuStreamWaitEvent(CUstream s, CUevent, unsigned int) {
  if (emu::capturing(s) && refused_in_capture("cuStreamWaitEvent")) return CUDA_ERROR_STREAM_CAPTURE_ISOLATION;
  return CUDA_SUCCESS;
}
CUresult cuEventCreate(CUevent* e, unsigned int) {
  *e = reinterpret_cast<CUevent>(new Event{});
  return CUDA_SUCCESS;
}
CUresult cuEventDestroy(CUevent e) {
  delete reinterpret_cast<Event*>(e);
  return CUDA_SUCCESS;
}
CUresult cuEventRecord(CUevent e, CUstream) {
  auto* ev = reinterpret_cast<Event*>(e);
  ev->at = std::chrono::steady_clock::now();
  ev->recorded = true;
  return CUDA_SUCCESS;
}
CUresult cuEventSynchronize(CUevent) {
  if (refused_in_capture("cuEventSynchronize")) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return sync_result();
}
CUresult cuEventQuery(CUevent) { return CUDA_SUCCESS; }
CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end) {
  const auto* a = reinterpret_cast<Event*>(start);
  const auto* b = reinterpret_cast<Event*>(end);
  if (!a->recorded || !b->recorded) return CUDA_ERROR_INVALID_HANDLE;
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return CUDA_SUCCESS;
}

// ------------------------------------------------------------------ memory
CUresult cuMemAlloc(CUdeviceptr* p, size_t bytes) {
  if (refused_in_capture("cuMemAlloc")) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return alloc(p, bytes);
}
// cuMemAlloc refuses 0 bytes (documented); the stream-ordered allocator, which cudarc uses on
// GPUs with memory pools (every sm_80+ GPU under Linux), accepts them (cudarc issue #194 and
// dfdx #870: zero-length allocations fail only where pools are missing). Null pointer here.
CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, CUstream) {
  if (refused_in_capture("cuMemAllocAsync")) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  if (p != nullptr && bytes == 0) {
    *p = 0;
    return CUDA_SUCCESS;
  }
  return alloc(p, bytes);
}
CUresult cuMemFree(CUdeviceptr p) {
  if (refused_in_capture("cuMemFree")) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return release(p);
}
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream) {
  if (refused_in_capture("cuMemFreeAsync")) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return release(p);
}
CUresult cuMemGetInfo(size_t* free_bytes, size_t* total) {
  *total = size_t{16} << 30;
  std::lock_guard<std::mutex> g(g_mutex);
  size_t used = 0;
  for (const auto& [base, bytes] : g_allocs) used += bytes;
  *free_bytes = used < *total ? *total - used : 0;
  return CUDA_SUCCESS;
}
CUresult cuMemcpyHtoD(CUdeviceptr dst, const void* src, size_t n) {
  if (refused_in_capture("cuMemcpyHtoD")) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return htod(dst, src, n);
}
CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t n, CUstream) {
  if (refused_in_capture("a host-to-device copy")) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return htod(dst, src, n);
}
CUresult cuMemcpyDtoH(void* dst, CUdeviceptr src, size_t n) {
  if (refused_in_capture("cuMemcpyDtoH")) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return dtoh(dst, src, n);
}
CUresult cuMemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t n, CUstream) {
  if (refused_in_capture("a device-to-host copy")) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return dtoh(dst, src, n);
}
CUresult cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t n) {
  if (refused_in_capture("cuMemcpyDtoD")) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return dtod(dst, src, n);
}
CUresult cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
  if (!emu::capturing(s)) return dtod(dst, src, n);
  emu::captured->push_back([=] { dtod(dst, src, n); });
  return CUDA_SUCCESS;
}
CUresult cuMemsetD8(CUdeviceptr dst, unsigned char v, size_t n) {
  if (refused_in_capture("cuMemsetD8")) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  return memset8(dst, v, n);
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream s) {
  if (!emu::capturing(s)) return memset8(dst, v, n);
  emu::captured->push_back([=] { memset8(dst, v, n); });
  return CUDA_SUCCESS;
}

// ------------------------------------------------------------------ stream capture and graphs
CUresult cuStreamBeginCapture(CUstream s, CUstreamCaptureMode) {
  if (s == nullptr || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  if (emu::captured != nullptr) return CUDA_ERROR_ILLEGAL_STATE;
  emu::captured = new std::vector<std::function<void()>>();
  emu::capture_stream = s;
  t_capture_invalid = false;
  return CUDA_SUCCESS;
}
CUresult cuStreamEndCapture(CUstream s, CUgraph* g) {
  if (emu::captured == nullptr || s != emu::capture_stream) return CUDA_ERROR_ILLEGAL_STATE;
  std::unique_ptr<std::vector<std::function<void()>>> nodes(emu::captured);
  emu::captured = nullptr;
  emu::capture_stream = nullptr;
  *g = nullptr;
  if (t_capture_invalid) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
  *g = new CUgraph_st{std::move(*nodes)};
  return CUDA_SUCCESS;
}
CUresult cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus* status) {
  *status = !emu::capturing(s) ? CU_STREAM_CAPTURE_STATUS_NONE
            : t_capture_invalid ? CU_STREAM_CAPTURE_STATUS_INVALIDATED
                                : CU_STREAM_CAPTURE_STATUS_ACTIVE;
  return CUDA_SUCCESS;
}
CUresult cuGraphInstantiateWithFlags(CUgraphExec* e, CUgraph g, unsigned long long) {
  if (g == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *e = new CUgraphExec_st{g->nodes};
  return CUDA_SUCCESS;
}
CUresult cuGraphLaunch(CUgraphExec e, CUstream s) {
  if (e == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (emu::capturing(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;  // graphs in graphs: not modelled
  for (auto& node : e->nodes) node();
  return CUDA_SUCCESS;
}
CUresult cuGraphExecDestroy(CUgraphExec e) {
  delete e;
  return CUDA_SUCCESS;
}
CUresult cuGraphDestroy(CUgraph g) {
  delete g;
  return CUDA_SUCCESS;
}

// ------------------------------------------------------------------ errors
CUresult cuGetErrorName(CUresult e, const char** s) {
  *s = e == CUDA_SUCCESS ? "CUDA_SUCCESS"
       : e == CUDA_ERROR_LAUNCH_FAILED ? "CUDA_ERROR_LAUNCH_FAILED"
       : e == CUDA_ERROR_INVALID_VALUE ? "CUDA_ERROR_INVALID_VALUE"
       : e == CUDA_ERROR_OUT_OF_MEMORY ? "CUDA_ERROR_OUT_OF_MEMORY"
                                        : "CUDA_ERROR_(host-emu)";
  return CUDA_SUCCESS;
}
CUresult cuGetErrorString(CUresult e, const char** s) {
  *s = e == CUDA_ERROR_LAUNCH_FAILED ? "the host emulation reported errors in a kernel (see stderr)"
                                     : "host-emu driver error";
  return CUDA_SUCCESS;
}

// The runtime's name for a launcher's error code (status.cu's wc_status_name).
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorCooperativeLaunchTooLarge: return "cudaErrorCooperativeLaunchTooLarge";
    default: return "cudaError (host-emu)";
  }
}

// ------------------------------------------------------------------ tensor maps
CUresult cuTensorMapEncodeTiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* base,
                                const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                                const cuuint32_t* element_strides, CUtensorMapInterleave interleave,
                                CUtensorMapSwizzle swizzle, CUtensorMapL2promotion,
                                CUtensorMapFloatOOBfill oob) {
  if (type != CU_TENSOR_MAP_DATA_TYPE_UINT8 || rank != 2 || element_strides[0] != 1 || element_strides[1] != 1 ||
      interleave != CU_TENSOR_MAP_INTERLEAVE_NONE || oob != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE ||
      (swizzle != CU_TENSOR_MAP_SWIZZLE_NONE && swizzle != CU_TENSOR_MAP_SWIZZLE_128B)) {
    fprintf(stderr, "host-emu driver: only 2-D uint8 tensor maps (no interleave, zero fill) are emulated\n");
    return CUDA_ERROR_INVALID_VALUE;
  }
  const uint64_t d[2] = {dims[0], dims[1]};
  const uint32_t b[2] = {box[0], box[1]};
  return emu::sm90::encode_tensor_map_2d(map, base, d, strides[0], b, swizzle == CU_TENSOR_MAP_SWIZZLE_128B ? 128 : 0)
             ? CUDA_SUCCESS
             : CUDA_ERROR_INVALID_VALUE;
}

// ------------------------------------------------------------------ cuBLAS (cublasGemmEx)
// Enumerations as cublas_api.h / library_types.h number them.
enum { kOpN = 0, kOpT = 1, kR32F = 0, kR16F = 2, kR16BF = 14, kCompute32F = 68 };
enum { kBlasOk = 0, kBlasInvalid = 7, kBlasNotSupported = 15 };

// A handle is the stream its calls queue on (a capture records the GEMMs on that stream).
struct BlasHandle {
  CUstream stream = nullptr;
};
int cublasCreate_v2(void** handle) {
  *handle = new BlasHandle{};
  return kBlasOk;
}
int cublasDestroy_v2(void* handle) {
  delete static_cast<BlasHandle*>(handle);
  return kBlasOk;
}
int cublasSetStream_v2(void* handle, void* stream) {
  static_cast<BlasHandle*>(handle)->stream = static_cast<CUstream>(stream);
  return kBlasOk;
}
// The workspace is not used by the emulated GEMM; it must lie in one allocation.
int cublasSetWorkspace_v2(void*, void* workspace, size_t bytes) {
  if (bytes > 0 && !inside(reinterpret_cast<CUdeviceptr>(workspace), bytes, "cuBLAS workspace")) return kBlasInvalid;
  return kBlasOk;
}

// C = alpha · op(A) · op(B) + beta · C, column-major, f32 compute (products summed in f64).
int cublasGemmEx(void* handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* a,
                 int atype, int lda, const void* b, int btype, int ldb, const void* beta, void* c, int ctype, int ldc,
                 int compute, int algo) {
  const auto ok_type = [](int t) { return t == kR32F || t == kR16F || t == kR16BF; };
  if (!ok_type(atype) || !ok_type(btype) || !ok_type(ctype) || compute != kCompute32F) return kBlasNotSupported;
  if (m < 0 || n < 0 || k < 0 || (transa != kOpN && transa != kOpT) || (transb != kOpN && transb != kOpT) ||
      lda < std::max(1, transa == kOpN ? m : k) || ldb < std::max(1, transb == kOpN ? k : n) || ldc < std::max(1, m))
    return kBlasInvalid;
  // Captured: alpha and beta are read now (host pointer mode, as cuBLAS does in a capture).
  if (emu::capturing(static_cast<BlasHandle*>(handle)->stream)) {
    const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    emu::captured->push_back([=] {
      BlasHandle now{};
      cublasGemmEx(&now, transa, transb, m, n, k, &al, a, atype, lda, b, btype, ldb, &be, c, ctype, ldc, compute, algo);
    });
    return kBlasOk;
  }
  const auto load = [](const void* p, int t, size_t i) -> double {
    if (t == kR32F) return static_cast<const float*>(p)[i];
    if (t == kR16F) return __half2float(static_cast<const __half*>(p)[i]);
    return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  };
  if (getenv("EMU_SKIP_KERNELS") != nullptr) return kBlasOk;  // a dry run (shim.h's launch_with)
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double s = 0;
      for (int l = 0; l < k; ++l) {
        const size_t ai = transa == kOpN ? i + size_t(l) * lda : l + size_t(i) * lda;
        const size_t bi = transb == kOpN ? l + size_t(j) * ldb : j + size_t(l) * ldb;
        s += load(a, atype, ai) * load(b, btype, bi);
      }
      const size_t ci = i + size_t(j) * ldc;
      const float v = static_cast<float>(al * s + (be != 0.0f ? be * load(c, ctype, ci) : 0.0));
      if (ctype == kR32F) static_cast<float*>(c)[ci] = v;
      else if (ctype == kR16F) static_cast<__half*>(c)[ci] = __float2half_rn(v);
      else static_cast<__nv_bfloat16*>(c)[ci] = __float2bfloat16_rn(v);
    }
  return kBlasOk;
}

}  // extern "C"
