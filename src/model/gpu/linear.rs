//! A projection of the GPU path: bf16 weights on cuBLAS, or BitNet b1.58's packed ternary
//! weights on `matmul_ternary` (int8 activations written by the norm before it,
//! `rms_norm_quantize_activations`, as transformers' AutoBitLinear quantizes them).

use super::super::gemm::Gemm;
use super::super::{ModelConfig, Weights};
use super::{alloc, rows, to_bf16, OP};
use crate::ops::matmul_ternary::{matmul_ternary, PackedTernary, VALUES_PER_BYTE};
use crate::{Device, Error, Result, TensorView, TensorViewMut};
use cudarc::driver::CudaSlice;
use half::bf16;

/// One ternary projection `[n, k]`: packed `[n / 4, k]` and its `weight_scale`.
pub(super) struct TernaryPart {
    packed: CudaSlice<u8>,
    scale: f32,
    n: usize,
}

/// Projections of one input stacked along n (q, k, v; gate, up): one GEMM on bf16 weights, or
/// one activation quantization and a ternary GEMM per projection into its column range (each
/// BitNet projection has its own weight scale, and packing does not commute with stacking).
pub(super) enum GpuLinear {
    Dense { w: CudaSlice<bf16>, n: usize },
    Ternary(Vec<TernaryPart>),
}

/// int8 activations `[max_tokens, max_k]` and their per-token scales, reused by every
/// ternary projection of a step.
pub(super) struct Int8Scratch {
    q: CudaSlice<i8>,
    scale: CudaSlice<f32>,
}

impl Int8Scratch {
    pub(super) fn new(dev: &Device, max_tokens: usize, max_k: usize) -> Result<Self> {
        Ok(Self { q: alloc(dev, max_tokens * max_k)?, scale: alloc(dev, max_tokens)? })
    }
    /// The codes `[t, k]` and scales `[t]` for an op that writes them.
    pub(super) fn views_mut(&mut self, t: usize, k: usize) -> Result<(TensorViewMut<'_, i8, 2>, TensorViewMut<'_, f32, 1>)> {
        Ok((TensorViewMut::contiguous(self.q.slice_mut(..t * k), [t, k])?, TensorViewMut::contiguous(self.scale.slice_mut(..t), [t])?))
    }
}

impl GpuLinear {
    /// `{prefix}.weight` of each `(prefix, n)`, all with `k` columns: bf16 stacked, or (BitNet)
    /// packed ternary `[n / 4, k]` u8 with `{prefix}.weight_scale`, checked for 0b11 codes as the
    /// CPU path does.
    pub(super) fn load(dev: &Device, w: &Weights, c: &ModelConfig, parts: &[(String, usize)], k: usize) -> Result<Self> {
        if c.bitnet_quant.is_none() {
            let mut all = Vec::new();
            for (prefix, n) in parts {
                all.extend(w.get_shaped(&format!("{prefix}.weight"), &[*n, k])?);
            }
            return Ok(Self::Dense { w: dev.upload(&to_bf16(&all))?, n: parts.iter().map(|p| p.1).sum() });
        }
        let mut out = Vec::with_capacity(parts.len());
        for (prefix, n) in parts {
            let name = format!("{prefix}.weight");
            let (packed, shape) = w.get_u8(&name)?;
            if n % VALUES_PER_BYTE != 0 || shape != [n / VALUES_PER_BYTE, k] {
                return Err(Error::ShapeMismatch { op: OP, arg: "packed ternary weight", expected: format!("{name}: [{n} / 4, {k}]"), got: format!("{shape:?}") });
            }
            // A 2-bit field 0b11 has both bits set.
            if packed.iter().any(|&b| b & (b >> 1) & 0x55 != 0) {
                return Err(Error::Load { path: name, reason: "a 2-bit code 0b11 (not ternary)".into() });
            }
            let scale = w.get_shaped(&format!("{prefix}.weight_scale"), &[1])?[0];
            out.push(TernaryPart { packed: dev.upload(&packed)?, scale, n: *n });
        }
        Ok(Self::Ternary(out))
    }

    /// Bytes of weights.
    pub(super) fn bytes(&self) -> usize {
        match self {
            Self::Dense { w, .. } => w.len() * std::mem::size_of::<bf16>(),
            Self::Ternary(parts) => parts.iter().map(|p| p.packed.len()).sum(),
        }
    }

    /// bf16 projections: `y[:t, :n] = x[:t, :k] · Wᵀ` (y `[t, n]` dense, n = the stacked
    /// projections' total) on cuBLAS.
    pub(super) fn forward(&self, dev: &Device, gemm: &Gemm, x: &TensorView<bf16, 2>, y: &mut CudaSlice<bf16>) -> Result<()> {
        let Self::Dense { w, n } = self else {
            return Err(Error::Unsupported { op: OP, what: "bf16 activations into a ternary projection (its norm writes int8 codes)", value: "ternary".into() });
        };
        let [t, k] = x.shape();
        gemm.linear(dev, x, &rows(w, *n, k)?, &mut TensorViewMut::contiguous(y.slice_mut(..t * n), [t, *n])?)
    }

    /// [`GpuLinear::forward`] added into `y` (bf16 weights only): y += x · wᵀ.
    pub(super) fn forward_add(&self, dev: &Device, gemm: &Gemm, x: &TensorView<bf16, 2>, y: &mut CudaSlice<bf16>) -> Result<()> {
        let Self::Dense { w, n } = self else {
            return Err(Error::Unsupported { op: OP, what: "an accumulating ternary projection", value: "ternary".into() });
        };
        let [t, k] = x.shape();
        gemm.linear_add(dev, x, &rows(w, *n, k)?, &mut TensorViewMut::contiguous(y.slice_mut(..t * n), [t, *n])?)
    }

    /// Ternary projections of activations already in `int8` (`[t, k]` codes and their scales,
    /// e.g. from `rms_norm_quantize_activations`) into `y` `[t, n]`, each into its columns.
    pub(super) fn forward_quantized(&self, dev: &Device, int8: &Int8Scratch, t: usize, k: usize, y: &mut CudaSlice<bf16>) -> Result<()> {
        let Self::Ternary(parts) = self else {
            return Err(Error::Unsupported { op: OP, what: "int8 activations into a bf16 projection", value: "dense".into() });
        };
        if t == 0 {
            return Ok(());
        }
        let total: usize = parts.iter().map(|p| p.n).sum();
        let q = TensorView::contiguous(int8.q.slice(..t * k), [t, k])?;
        let scale = TensorView::contiguous(int8.scale.slice(..t), [t])?;
        let mut col = 0;
        for p in parts {
            let packed = rows(&p.packed, p.n / VALUES_PER_BYTE, k)?;
            let span = (t - 1) * total + p.n;
            let mut out = TensorViewMut::new(y.slice_mut(col..col + span), [t, p.n], [total, 1])?;
            matmul_ternary(dev, &q, &scale, PackedTernary { packed: &packed, scale: p.scale }, None, &mut out)?;
            col += p.n;
        }
        Ok(())
    }
}
