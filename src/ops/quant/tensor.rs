//! Single-pass per-tensor quantization's host side (cuda/quant_fp8/tensor.cuh): the size of
//! the workspace its grid barrier lives in, what the device allows it, and the pure planner
//! that picks it.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::HALF_DTYPES;
use crate::ops::{check_dtype, check_status};
use crate::{ffi, DType, Device, Error, Result};

/// u32 words of the single pass's GPU state, kept by the `Device` (`Device::with_scratch`):
/// the grid barrier's arrival word and one amax slot per CTA (8.3 KB). Zero-filled at
/// allocation; every launch leaves the arrival word as it found it (no reset between calls or
/// CUDA graph replays).
pub(super) const WORKSPACE_WORDS: usize = ffi::WC_QUANT_WORKSPACE_WORDS as usize;

/// What the device allows the single-pass per-tensor kernel (`wc_quantize_fp8_tensor_limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorQuantLimits {
    /// Streaming multiprocessors on the device.
    pub sm_count: usize,
    /// Co-resident CTAs per SM when each holds `max_held` elements (occupancy calculator).
    pub ctas_per_sm: usize,
    /// Elements of x one CTA can hold in shared memory (a multiple of 16).
    pub max_held: usize,
    /// The device supports cooperative launches (co-residency guaranteed or the launch fails).
    pub cooperative: bool,
}

impl TensorQuantLimits {
    /// The limits on `dev` for x of dtype `T`, asked once per (device, dtype).
    pub fn query<T: DType>(dev: &Device) -> Result<Self> {
        const OP: &str = "TensorQuantLimits::query";
        check_dtype::<T>(OP, HALF_DTYPES)?;
        static KNOWN: OnceLock<Mutex<HashMap<(usize, ffi::wc_dtype), TensorQuantLimits>>> = OnceLock::new();
        let key = (dev.info().ordinal, T::TAG);
        let known = KNOWN.get_or_init(Default::default);
        if let Some(&l) = known.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(l);
        }
        dev.context().bind_to_thread()?;
        let mut l = ffi::wc_quant_tensor_limits::default();
        // SAFETY: l is valid for the call; it queries the current device and launches nothing.
        check_status(OP, unsafe { ffi::wc_quantize_fp8_tensor_limits(T::TAG, &mut l) })?;
        let l = Self {
            sm_count: l.sm_count.max(0) as usize,
            ctas_per_sm: l.ctas_per_sm.max(0) as usize,
            max_held: l.max_held.max(0) as usize,
            cooperative: l.cooperative != 0,
        };
        known.lock().unwrap_or_else(|e| e.into_inner()).insert(key, l);
        Ok(l)
    }

    /// CTAs the single pass may launch: all co-resident, at most `WC_QUANT_TENSOR_MAX_CTAS`.
    pub fn max_ctas(&self) -> usize {
        (self.sm_count * self.ctas_per_sm).min(TensorQuantPlan::MAX_CTAS)
    }
}

/// How a per-tensor quantization runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorQuantPlan {
    /// Memset, a grid-stride amax kernel, a grid-stride quantizing kernel: x read twice.
    TwoKernels,
    /// One cooperative launch of `ctas` co-resident CTAs of [`TensorQuantPlan::THREADS`]
    /// threads; each holds up to `held` elements (a multiple of 16) of its contiguous share of
    /// x in shared memory across a grid barrier and re-reads the rest.
    SinglePass {
        /// CTAs launched (all co-resident).
        ctas: usize,
        /// Most elements of x each CTA keeps in shared memory (a multiple of 16).
        held: usize,
    },
}

impl TensorQuantPlan {
    /// Threads per CTA of the single pass (cuda/quant_fp8.cu, kTensorThreads).
    pub const THREADS: usize = 512;
    /// `WC_QUANT_TENSOR_MAX_CTAS`.
    pub const MAX_CTAS: usize = ffi::WC_QUANT_TENSOR_MAX_CTAS as usize;

    /// The planner: the single pass whenever it applies — the device launches cooperatively,
    /// the layout takes 16-byte vectors (`vector_layout`: cols % 16 == 0, rows of x and out
    /// 16-byte aligned) and a CTA fits — on `min(max_ctas, ⌈chunks / THREADS⌉)` CTAs (16-element
    /// chunks; at least one per thread, so a small tensor has fewer arrivals at the barrier),
    /// each holding `min(max_held, its share)`; the two kernels otherwise. By bytes the single
    /// pass never loses (docs/quant_fp8.md): its held part is read once, the rest at most twice.
    pub fn choose(rows: usize, cols: usize, vector_layout: bool, limits: &TensorQuantLimits) -> Self {
        let chunks = rows.saturating_mul(cols) / 16;
        if !limits.cooperative || !vector_layout || chunks == 0 || limits.max_ctas() == 0 {
            return Self::TwoKernels;
        }
        let ctas = limits.max_ctas().min(chunks.div_ceil(Self::THREADS));
        let held = (chunks.div_ceil(ctas) * 16).min(limits.max_held / 16 * 16);
        Self::SinglePass { ctas, held }
    }

    /// A forced plan must fit the device and the layout.
    pub(super) fn check(&self, op: &'static str, vector_layout: bool, limits: &TensorQuantLimits) -> Result<()> {
        let Self::SinglePass { ctas, held } = *self else { return Ok(()) };
        let bad = |what, value: String| Err(Error::Unsupported { op, what, value });
        if !limits.cooperative {
            return bad("single pass (the device does not launch cooperatively)", format!("{self:?}"));
        }
        if !vector_layout {
            return bad("single pass layout (cols % 16 == 0, 16-byte aligned rows of x and out)", format!("{self:?}"));
        }
        if ctas == 0 || ctas > limits.max_ctas() {
            return bad("single-pass CTAs (1 ..= SMs × CTAs per SM)", format!("{ctas} (at most {})", limits.max_ctas()));
        }
        if held % 16 != 0 || held > limits.max_held {
            return bad("single-pass held elements (a multiple of 16 within shared memory)", format!("{held} (at most {})", limits.max_held));
        }
        Ok(())
    }
}

/// The 16-byte vector layout (cuda/quant_fp8.cu, rows_vectorizable): whole 16-element chunks,
/// rows of x and out 16-byte aligned.
pub(super) fn vector_layout<T: DType>(cols: usize, x_ptr: u64, x_stride: usize, out_ptr: u64, out_stride: usize) -> bool {
    let v = 16 / std::mem::size_of::<T>();
    cols.is_multiple_of(16) && x_stride.is_multiple_of(v) && out_stride.is_multiple_of(16) && x_ptr.is_multiple_of(16) && out_ptr.is_multiple_of(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H200: TensorQuantLimits = TensorQuantLimits { sm_count: 132, ctas_per_sm: 1, max_held: 116096, cooperative: true };

    #[test]
    fn the_planner_takes_the_single_pass_where_it_applies() {
        use TensorQuantPlan::*;
        // The bar's shape: every SM, each CTA holding as much as fits (52 % of x).
        assert_eq!(TensorQuantPlan::choose(4096, 7168, true, &H200), SinglePass { ctas: 132, held: 116096 });
        // Small: one chunk per thread (32 CTAs), all held.
        assert_eq!(TensorQuantPlan::choose(64, 4096, true, &H200), SinglePass { ctas: 32, held: 8192 });
        assert_eq!(TensorQuantPlan::choose(1, 16, true, &H200), SinglePass { ctas: 1, held: 16 });
        // A share that just fits: 132 CTAs × 116096 elements.
        assert_eq!(TensorQuantPlan::choose(132, 116096, true, &H200), SinglePass { ctas: 132, held: 116096 });
        // Two kernels: no cooperative launch, a scalar layout, no CTA fits, nothing to do.
        assert_eq!(TensorQuantPlan::choose(4096, 7168, true, &TensorQuantLimits { cooperative: false, ..H200 }), TwoKernels);
        assert_eq!(TensorQuantPlan::choose(4096, 7168, false, &H200), TwoKernels);
        assert_eq!(TensorQuantPlan::choose(4096, 7168, true, &TensorQuantLimits { ctas_per_sm: 0, ..H200 }), TwoKernels);
        assert_eq!(TensorQuantPlan::choose(0, 7168, true, &H200), TwoKernels);
        // At most WC_QUANT_TENSOR_MAX_CTAS, however many SMs; held rounded down to whole chunks.
        let big = TensorQuantLimits { sm_count: 1000, ctas_per_sm: 4, max_held: 1000, cooperative: true };
        assert_eq!(big.max_ctas(), TensorQuantPlan::MAX_CTAS);
        assert_eq!(TensorQuantPlan::choose(16384, 7168, true, &big), SinglePass { ctas: 2048, held: 992 });
        // A held size of zero streams everything (re-read) but is still one pass over the grid.
        let none = TensorQuantLimits { max_held: 0, ..H200 };
        assert_eq!(TensorQuantPlan::choose(4096, 7168, true, &none), SinglePass { ctas: 132, held: 0 });
    }

    #[test]
    fn forced_plans_must_fit_the_device_and_the_layout() {
        use TensorQuantPlan::*;
        let ok = |p: TensorQuantPlan, v: bool, l: &TensorQuantLimits| p.check("quantize_fp8", v, l);
        assert!(ok(TwoKernels, false, &TensorQuantLimits { cooperative: false, ..H200 }).is_ok());
        assert!(ok(SinglePass { ctas: 132, held: 116096 }, true, &H200).is_ok());
        assert!(ok(SinglePass { ctas: 7, held: 0 }, true, &H200).is_ok());
        for (p, v, l) in [
            (SinglePass { ctas: 133, held: 16 }, true, H200),
            (SinglePass { ctas: 0, held: 16 }, true, H200),
            (SinglePass { ctas: 4, held: 116096 + 16 }, true, H200),
            (SinglePass { ctas: 4, held: 24 }, true, H200),
            (SinglePass { ctas: 4, held: 16 }, false, H200),
            (SinglePass { ctas: 4, held: 16 }, true, TensorQuantLimits { cooperative: false, ..H200 }),
        ] {
            assert!(matches!(ok(p, v, &l), Err(Error::Unsupported { op: "quantize_fp8", .. })), "{p:?} {v} {l:?}");
        }
    }

    #[test]
    fn the_vector_layout_matches_the_launcher() {
        assert!(vector_layout::<half::bf16>(7168, 256, 7168, 512, 7168));
        assert!(!vector_layout::<half::bf16>(7160, 256, 7160, 512, 7160)); // partial chunk
        assert!(!vector_layout::<half::bf16>(7168, 258, 7168, 512, 7168)); // x misaligned
        assert!(!vector_layout::<half::bf16>(7168, 256, 7172, 512, 7168)); // x rows misaligned
        assert!(!vector_layout::<half::f16>(7168, 256, 7168, 512, 7176)); // out rows misaligned
    }
}
