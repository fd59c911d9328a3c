//! A projection of the GPU path: bf16 weights on cuBLAS; FP8 block weights (DeepSeek-V3,
//! Qwen3-FP8: e4m3 with one scale per 128 × 128 block) kept as e4m3 on `matmul_fp8`, their
//! input quantized per token per 128 columns (`quantize_fp8` with 1×128 groups, the
//! checkpoints' `activation_scheme: dynamic`); or BitNet b1.58's packed ternary weights on
//! `matmul_ternary` (int8 activations written by the norm before it,
//! `rms_norm_quantize_activations`, as transformers' AutoBitLinear quantizes them).
//!
//! An FP8 checkpoint's projection stays FP8 where the GEMM takes it (every stacked part's rows
//! whole 128-row blocks, k a multiple of 128); any other (DeepSeek-V3's 64 k_pe rows of
//! kv_a_proj_with_mqa, the MLA projections folded at load) is dequantized to bf16 at load.

use super::super::gemm::Gemm;
use super::super::weights::BlockFp8;
use super::super::{ModelConfig, Weights};
use super::{alloc, rows, rows_mut, to_bf16, OP};
use crate::ops::matmul_fp8::{matmul_fp8, matmul_fp8_grouped, matmul_grouped, Fp8Operand, GemmKernel, MatmulFp8Config};
use crate::ops::matmul_ternary::{matmul_ternary, PackedTernary, VALUES_PER_BYTE};
use crate::ops::quant::{quantize_fp8, ScaleGranularity, FP8_BLOCK};
use crate::{Device, Error, Result, TensorView, TensorViewMut, F8E4M3};
use cudarc::driver::CudaSlice;
use half::bf16;
use std::ops::Range;

/// One ternary projection `[n, k]`: packed `[n / 4, k]` and its `weight_scale`.
pub(super) struct TernaryPart {
    packed: CudaSlice<u8>,
    scale: f32,
    n: usize,
}

/// Projections of one input stacked along n (q, k, v; gate, up; every expert's): one GEMM on
/// bf16 or FP8 weights, or one activation quantization and a ternary GEMM per projection into
/// its column range (each BitNet projection has its own weight scale, and packing does not
/// commute with stacking).
pub(super) enum GpuLinear {
    /// `[n, k]` bf16.
    Dense { w: CudaSlice<bf16>, n: usize, k: usize },
    /// `[n, k]` e4m3 codes and their 128 × 128 block scales `[n / 128, k / 128]` (row-major).
    Fp8 { w: CudaSlice<F8E4M3>, scale: CudaSlice<f32>, n: usize, k: usize },
    Ternary(Vec<TernaryPart>),
}

/// A bf16 or FP8 [`GpuLinear`] as GEMM operands.
pub(super) enum LinearRows<'a> {
    Dense(TensorView<'a, bf16, 2>),
    Fp8 { w: TensorView<'a, F8E4M3, 2>, scale: TensorView<'a, f32, 2> },
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

/// The e4m3 activations of FP8 projections: codes `[rows, k]` and their 1×128 group scales
/// `[rows, k / 128]` (both row-major), reused by every FP8 projection of a step; and a copy of
/// an accumulating projection's output (`matmul_fp8`'s residual input may not alias its output).
pub(super) struct Fp8Scratch {
    q: CudaSlice<F8E4M3>,
    scale: CudaSlice<f32>,
    copy: CudaSlice<bf16>,
}

impl Fp8Scratch {
    /// Room for `max_rows` rows of up to `max_k` columns, and `max_add` output elements of
    /// accumulating projections (all 0 for a model without FP8 projections).
    pub(super) fn new(dev: &Device, max_rows: usize, max_k: usize, max_add: usize) -> Result<Self> {
        Ok(Self { q: alloc(dev, max_rows * max_k)?, scale: alloc(dev, max_rows * max_k.div_ceil(FP8_BLOCK))?, copy: alloc(dev, max_add)? })
    }

    /// Quantizes x `[rows, k]` into the first rows (dynamic 1×128 group scales).
    pub(super) fn quantize(&mut self, dev: &Device, x: &TensorView<bf16, 2>) -> Result<()> {
        let [r, k] = x.shape();
        let g = k / FP8_BLOCK;
        let mut q = TensorViewMut::contiguous(self.q.slice_mut(..r * k), [r, k])?;
        let mut s = TensorViewMut::contiguous(self.scale.slice_mut(..r * g), [r, g])?;
        quantize_fp8(dev, x, &mut q, &mut s, ScaleGranularity::Group128)
    }

    /// The first `t` rows of `[.., k]` codes and group scales, for an op that writes them
    /// (`(fused_add_)rms_norm_quant_fp8`: a norm straight into its projection's input).
    pub(super) fn views_mut(&mut self, t: usize, k: usize) -> Result<(TensorViewMut<'_, F8E4M3, 2>, TensorViewMut<'_, f32, 2>)> {
        let g = k / FP8_BLOCK;
        Ok((TensorViewMut::contiguous(self.q.slice_mut(..t * k), [t, k])?, TensorViewMut::contiguous(self.scale.slice_mut(..t * g), [t, g])?))
    }

    /// The first `n` rows of the quantized `[.., k]` activations: codes and scales.
    pub(super) fn rows(&self, n: usize, k: usize) -> Result<(TensorView<'_, F8E4M3, 2>, TensorView<'_, f32, 2>)> {
        let g = k / FP8_BLOCK;
        Ok((TensorView::contiguous(self.q.slice(..n * k), [n, k])?, TensorView::contiguous(self.scale.slice(..n * g), [n, g])?))
    }
}

/// The parts of a stacked projection: `(name, rows of it)`, each `name.weight` having
/// `total rows` rows.
pub(super) type Part<'p> = (&'p str, usize, Range<usize>);

impl GpuLinear {
    /// `{prefix}.weight` of each `(prefix, n)`, all with `k` columns, stacked: bf16 (converted or
    /// dequantized), e4m3 with block scales (FP8 checkpoints, where the GEMM takes them), or
    /// (BitNet) packed ternary `[n / 4, k]` u8 with `{prefix}.weight_scale`, checked for 0b11
    /// codes as the CPU path does.
    pub(super) fn load(dev: &Device, w: &Weights, c: &ModelConfig, parts: &[(String, usize)], k: usize) -> Result<Self> {
        if c.bitnet_quant.is_some() {
            return Self::load_ternary(dev, w, parts, k);
        }
        let names: Vec<String> = parts.iter().map(|(prefix, _)| format!("{prefix}.weight")).collect();
        let parts: Vec<Part> = names.iter().zip(parts).map(|(name, &(_, n))| (name.as_str(), n, 0..n)).collect();
        Self::load_stacked(dev, w, c, &parts, k)
    }

    /// The tensor `name` of `shape` (`[…, k]`) as one bf16 projection of all its rows (transformers
    /// 5's fused expert tensors, `[E, rows per expert, k]`).
    pub(super) fn load_whole(dev: &Device, w: &Weights, name: &str, shape: &[usize]) -> Result<Self> {
        let all = w.get_shaped(name, shape)?;
        let k = shape.last().copied().unwrap_or(1);
        Self::dense(dev, &all, all.len() / k.max(1), k)
    }

    /// bf16 weights `[n, k]` computed at load (f32, rounded once).
    pub(super) fn dense(dev: &Device, w: &[f32], n: usize, k: usize) -> Result<Self> {
        debug_assert_eq!(w.len(), n * k);
        Ok(Self::Dense { w: dev.upload(&to_bf16(w))?, n, k })
    }

    /// Parts `(name, total rows, rows taken)` of weights with `k` columns, stacked in order
    /// (several projections of one input, or the rows of one whose outputs go to different
    /// places: kv_a_proj_with_mqa's latent and k_pe rows): FP8 when every part is whole 128-row
    /// blocks of an e4m3 tensor and k a multiple of 128, else bf16.
    pub(super) fn load_stacked(dev: &Device, w: &Weights, c: &ModelConfig, parts: &[Part], k: usize) -> Result<Self> {
        let n: usize = parts.iter().map(|p| p.2.len()).sum();
        let blocks = |r: &Range<usize>| r.start.is_multiple_of(FP8_BLOCK) && r.len().is_multiple_of(FP8_BLOCK);
        if c.fp8_weight_block == Some([FP8_BLOCK, FP8_BLOCK]) && k.is_multiple_of(FP8_BLOCK) && parts.iter().all(|p| blocks(&p.2)) {
            let mut fp8 = Vec::with_capacity(parts.len());
            for &(name, total, _) in parts {
                match w.get_block_fp8(name)? {
                    Some(b) if b.shape == [total, k] => fp8.push(b),
                    Some(b) => return Err(Error::ShapeMismatch { op: OP, arg: "FP8 weight", expected: format!("{name}: [{total}, {k}]"), got: format!("{:?}", b.shape) }),
                    None => break, // stored in another dtype: all bf16
                }
            }
            if fp8.len() == parts.len() {
                let (mut codes, mut scale) = (Vec::with_capacity(n * k), Vec::new());
                let g = k / FP8_BLOCK;
                for (BlockFp8 { codes: c8, scale: s, .. }, (_, _, r)) in fp8.iter().zip(parts) {
                    codes.extend_from_slice(&c8[r.start * k..r.end * k]);
                    scale.extend_from_slice(&s[r.start / FP8_BLOCK * g..r.end / FP8_BLOCK * g]);
                }
                return Ok(Self::Fp8 { w: dev.upload(&codes)?, scale: dev.upload(&scale)?, n, k });
            }
        }
        let mut all = Vec::with_capacity(n * k);
        for &(name, total, ref r) in parts {
            all.extend_from_slice(&w.get_shaped(name, &[total, k])?[r.start * k..r.end * k]);
        }
        Self::dense(dev, &all, n, k)
    }

    fn load_ternary(dev: &Device, w: &Weights, parts: &[(String, usize)], k: usize) -> Result<Self> {
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

    /// Bytes of weights (FP8: codes and scales).
    pub(super) fn bytes(&self) -> usize {
        match self {
            Self::Dense { w, .. } => w.len() * std::mem::size_of::<bf16>(),
            Self::Fp8 { w, scale, .. } => w.len() + scale.len() * std::mem::size_of::<f32>(),
            Self::Ternary(parts) => parts.iter().map(|p| p.packed.len()).sum(),
        }
    }

    /// The input width of an FP8 projection (what its activations need in [`Fp8Scratch`]).
    pub(super) fn fp8_k(&self) -> Option<usize> {
        match self {
            Self::Fp8 { k, .. } => Some(*k),
            _ => None,
        }
    }

    /// The whole projection as GEMM operands.
    fn all(&self) -> Result<LinearRows<'_>> {
        match self {
            Self::Dense { w, n, k } => Ok(LinearRows::Dense(TensorView::contiguous(w.as_view(), [*n, *k])?)),
            Self::Fp8 { w, scale, n, k } => Ok(LinearRows::Fp8 {
                w: TensorView::contiguous(w.as_view(), [*n, *k])?,
                scale: TensorView::contiguous(scale.as_view(), [n / FP8_BLOCK, k / FP8_BLOCK])?,
            }),
            Self::Ternary(_) => Err(Error::Unsupported { op: OP, what: "bf16 activations into a ternary projection (its norm writes int8 codes)", value: "ternary".into() }),
        }
    }

    /// `y = x · Wᵀ` (x `[t, k]` bf16, y `[t, n]`): cuBLAS, or (FP8) x quantized into `fp8`, then
    /// `matmul_fp8`.
    pub(super) fn forward(&self, dev: &Device, gemm: &Gemm, fp8: &mut Fp8Scratch, x: &TensorView<bf16, 2>, y: &mut TensorViewMut<bf16, 2>) -> Result<()> {
        let w = self.all()?;
        let [t, k] = x.shape();
        if let LinearRows::Fp8 { .. } = w {
            fp8.quantize(dev, x)?;
            return w.forward(dev, gemm, Input::Fp8(&fp8.rows(t, k)?), None, y);
        }
        w.forward(dev, gemm, Input::Bf16(x), None, y)
    }

    /// An FP8 projection of activations already in `fp8` (`[t, k]`, written by the norm before
    /// it): `y = x · Wᵀ`.
    pub(super) fn forward_fp8(&self, dev: &Device, gemm: &Gemm, fp8: &Fp8Scratch, t: usize, y: &mut TensorViewMut<bf16, 2>) -> Result<()> {
        let Self::Fp8 { k, .. } = self else {
            return Err(Error::Unsupported { op: OP, what: "e4m3 activations into a projection that is not FP8", value: String::new() });
        };
        self.all()?.forward(dev, gemm, Input::Fp8(&fp8.rows(t, *k)?), None, y)
    }

    /// The experts' projections (this one stacks `groups` experts' `[n / groups, k]` weights) of
    /// x's rows in expert order, `offsets` `[groups + 1]` on the device (moe_align's): one grouped
    /// GEMM into y `[rows, n / groups]`, the offsets never read on the host. bf16 weights take
    /// bf16 rows (`matmul_grouped`); FP8 weights take e4m3 rows with 1×128 scales
    /// (`matmul_fp8_grouped`).
    pub(super) fn forward_grouped(&self, dev: &Device, x: Input, offsets: &TensorView<i32, 1>, y: &mut TensorViewMut<bf16, 2>) -> Result<()> {
        match (self, x) {
            (Self::Dense { w, n, k }, Input::Bf16(x)) => {
                let w = TensorView::contiguous(w.as_view(), [*n, *k])?;
                matmul_grouped(dev, x, &w, offsets, None, None, y, GemmKernel::Auto)
            }
            (Self::Fp8 { w, scale, n, k }, Input::Fp8((q, s))) => {
                let w = TensorView::contiguous(w.as_view(), [*n, *k])?;
                let scale = TensorView::contiguous(scale.as_view(), [n / FP8_BLOCK, k / FP8_BLOCK])?;
                let a = Fp8Operand { data: q, scale: s, granularity: ScaleGranularity::Group128 };
                let b = Fp8Operand { data: &w, scale: &scale, granularity: ScaleGranularity::Block128 };
                matmul_fp8_grouped(dev, a, b, offsets, None, None, y, MatmulFp8Config::default())
            }
            _ => Err(Error::Unsupported { op: OP, what: "grouped expert GEMMs (bf16 weights of bf16 rows, FP8 weights of e4m3 rows)", value: String::new() }),
        }
    }

    /// [`GpuLinear::forward`] added into the dense `[t, n]` rows of `y`: y += x · Wᵀ (one
    /// rounding of the sum).
    pub(super) fn forward_add(&self, dev: &Device, gemm: &Gemm, fp8: &mut Fp8Scratch, x: &TensorView<bf16, 2>, y: &mut CudaSlice<bf16>) -> Result<()> {
        let [t, k] = x.shape();
        let w = self.all()?;
        let n = w.n();
        if let LinearRows::Dense(w) = &w {
            return gemm.linear_add(dev, x, w, &mut rows_mut(y, t, n)?);
        }
        fp8.quantize(dev, x)?;
        if fp8.copy.len() < t * n {
            return Err(Error::Unsupported { op: OP, what: "accumulating FP8 projection rows (the scratch's)", value: format!("[{t}, {n}]") });
        }
        dev.stream().memcpy_dtod(&y.slice(..t * n), &mut fp8.copy.slice_mut(..t * n))?;
        let residual = TensorView::contiguous(fp8.copy.slice(..t * n), [t, n])?;
        w.forward(dev, gemm, Input::Fp8(&fp8.rows(t, k)?), Some(&residual), &mut rows_mut(y, t, n)?)
    }

    /// Ternary projections of activations already in `int8` (`[t, k]` codes and their scales,
    /// e.g. from `rms_norm_quantize_activations`) into `y` `[t, n]`, each into its columns.
    pub(super) fn forward_quantized(&self, dev: &Device, int8: &Int8Scratch, t: usize, k: usize, y: &mut CudaSlice<bf16>) -> Result<()> {
        let Self::Ternary(parts) = self else {
            return Err(Error::Unsupported { op: OP, what: "int8 activations into a bf16 or FP8 projection", value: "not ternary".into() });
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

/// A projection's input: bf16 rows (for bf16 weights), or e4m3 codes and their 1×128 group
/// scales (rows of an [`Fp8Scratch`], for FP8 weights).
pub(super) enum Input<'v, 'a> {
    Bf16(&'v TensorView<'a, bf16, 2>),
    Fp8(&'v (TensorView<'a, F8E4M3, 2>, TensorView<'a, f32, 2>)),
}

impl LinearRows<'_> {
    /// Output columns (the weight rows).
    fn n(&self) -> usize {
        match self {
            Self::Dense(w) => w.shape()[0],
            Self::Fp8 { w, .. } => w.shape()[0],
        }
    }

    /// `y = x · Wᵀ (+ residual)`: bf16 x on cuBLAS (no residual), or e4m3 x on `matmul_fp8`.
    pub(super) fn forward(&self, dev: &Device, gemm: &Gemm, x: Input, residual: Option<&TensorView<bf16, 2>>, y: &mut TensorViewMut<bf16, 2>) -> Result<()> {
        match (self, x) {
            (Self::Dense(w), Input::Bf16(x)) if residual.is_none() => gemm.linear(dev, x, w, y),
            (Self::Fp8 { w, scale }, Input::Fp8((q, s))) => {
                let a = Fp8Operand { data: q, scale: s, granularity: ScaleGranularity::Group128 };
                let b = Fp8Operand { data: w, scale, granularity: ScaleGranularity::Block128 };
                matmul_fp8(dev, a, b, None, residual, y, MatmulFp8Config::default())
            }
            _ => Err(Error::Unsupported { op: OP, what: "projection inputs (bf16 weights without residual, or FP8 weights with e4m3 activations)", value: String::new() }),
        }
    }
}
