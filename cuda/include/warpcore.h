/*
 * warpcore.h — the C ABI between the CUDA kernels (the .cu files under cuda/) and the Rust crate.
 *
 * Pure C, no CUDA headers: bindgen reads this file (and the family headers it includes) only.
 * One header per kernel family under warpcore/, each on warpcore/core.h (dtypes, stream,
 * status). Every op has one POD params struct `wc_<op>_params` and one launcher
 * `wc_<op>(const params*, wc_stream)` that returns a wc_status. Strides and sizes are in elements and are int64_t. The Rust wrappers validate
 * everything before calling; the launchers' own checks are a last guard.
 */
#ifndef WARPCORE_H
#define WARPCORE_H

#include "warpcore/core.h"
#include "warpcore/rms_norm.h"
#include "warpcore/attention.h"
#include "warpcore/rope.h"
#include "warpcore/moe_routing.h"
#include "warpcore/quant_fp8.h"
#include "warpcore/matmul_fp8.h"
#include "warpcore/elementwise.h"
#include "warpcore/matmul_ternary.h"

#endif /* WARPCORE_H */
