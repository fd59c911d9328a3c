/*
 * warpcore/core.h — what every family's header shares: element types, the stream, status codes
 * (and the GLU activations, which two families take).
 * Part of the C ABI (cuda/include/warpcore.h includes every family's header).
 */
#ifndef WARPCORE_CORE_H
#define WARPCORE_CORE_H

#include <stdint.h>

/* Element types. The values are part of the ABI (mirrored by Rust's DType::TAG). */
typedef enum wc_dtype {
  WC_F32 = 0,
  WC_F16 = 1,
  WC_BF16 = 2,
  WC_E4M3 = 3,   /* FP8 e4m3 (OCP "e4m3fn": no infinities, NaN = 0x7F/0xFF, max 448) */
} wc_dtype;

/* The gate activation of a gated MLP (reference::mlp::GluActivation): wc_glu (elementwise.h)
 * and wc_glu_quant_fp8 (quant_fp8.h). */
typedef enum wc_glu_activation {
  WC_GLU_SILU = 0,       /* x * sigmoid(x): SwiGLU (Llama, Qwen, Mixtral, DeepSeek) */
  WC_GLU_GELU_TANH = 1,  /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): GeGLU (Gemma) */
  WC_GLU_RELU2 = 2,      /* max(x, 0)^2: squared-ReLU GLU (BitNet b1.58) */
} wc_glu_activation;

/* A CUDA stream (CUstream / cudaStream_t; cudarc's CudaStream::cu_stream()). NULL = legacy default. */
typedef struct wc_stream_opaque* wc_stream;

/* 0 = success; > 0 = a cudaError_t from the launch; < 0 = a warpcore guard below. */
typedef int32_t wc_status;
#define WC_OK 0
#define WC_ERR_UNSUPPORTED (-1)    /* a combination the Rust side should have rejected */
#define WC_ERR_INVALID_ARG (-2)    /* a size or pointer the Rust side should have rejected */

#ifdef __cplusplus
#define WC_ALIGNAS(n) alignas(n)
#else
#define WC_ALIGNAS(n) _Alignas(n)
#endif

/* A TMA descriptor (CUtensorMap, built on the host by cuTensorMapEncodeTiled): the Hopper
 * kernels of matmul_fp8.h and attention.h read their tiles through them. */
typedef struct wc_tensor_map {
  WC_ALIGNAS(128) uint64_t opaque[16];
} wc_tensor_map;

#ifdef __cplusplus
#define WC_EXTERN_C_BEGIN extern "C" {
#define WC_EXTERN_C_END }
#else
#define WC_EXTERN_C_BEGIN
#define WC_EXTERN_C_END
#endif

WC_EXTERN_C_BEGIN
/* Name of a status code ("cudaErrorInvalidValue", "WC_ERR_UNSUPPORTED", ...). Never NULL. */
const char* wc_status_name(wc_status status);
WC_EXTERN_C_END

#endif /* WARPCORE_CORE_H */
