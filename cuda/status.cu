// status.cu — names for wc_status codes (always built, whatever kernel families are enabled).
#include "common.cuh"

extern "C" const char* wc_status_name(wc_status status) {
  switch (status) {
    case WC_OK: return "WC_OK";
    case WC_ERR_UNSUPPORTED: return "WC_ERR_UNSUPPORTED";
    case WC_ERR_INVALID_ARG: return "WC_ERR_INVALID_ARG";
    default: break;
  }
  if (status < 0) return "WC_ERR_UNKNOWN";
  const char* name = cudaGetErrorName(static_cast<cudaError_t>(status));
  return name != nullptr ? name : "cudaErrorUnknown";
}
