//! The GPU path's MLP pieces: the GLU over a gate_up GEMM's rows (bf16, or e4m3 codes for an
//! FP8 down projection) and the dense MLP (the MoE layer is moe.rs).

use super::{rows, rows_mut, vector, Buffers, Exec, Fp8Scratch, GpuLinear, GpuModel};
use crate::ops::elementwise::glu;
use crate::ops::matmul_ternary::rms_norm_quantize_activations;
use crate::ops::quant::{glu_quant_fp8, ScaleGranularity};
use crate::ops::rms_norm::RmsNormConfig;
use crate::reference::mlp::GluActivation;
use crate::{Device, Result, TensorView};
use cudarc::driver::CudaSlice;
use half::bf16;

/// The gate and up halves of `n` gate_up rows `[n, 2 · inter]` (gate columns, then up).
fn halves(gate_up: &CudaSlice<bf16>, n: usize, inter: usize) -> Result<(TensorView<'_, bf16, 2>, TensorView<'_, bf16, 2>)> {
    Ok((
        TensorView::new(gate_up.slice(..n * 2 * inter), [n, inter], [2 * inter, 1])?,
        TensorView::new(gate_up.slice(inter..n * 2 * inter), [n, inter], [2 * inter, 1])?,
    ))
}

/// act `[n, inter]` = glu(gate, up) over gate_up `[n, 2 · inter]`.
pub(super) fn glu_rows(dev: &Device, f: GluActivation, gate_up: &CudaSlice<bf16>, act: &mut CudaSlice<bf16>, n: usize, inter: usize) -> Result<()> {
    let (gate, up) = halves(gate_up, n, inter)?;
    glu(dev, &gate, &up, &mut rows_mut(act, n, inter)?, f)
}

/// The GLU of `n` gate_up rows as an FP8 down projection reads it: e4m3 codes and 1×128
/// scales in the FP8 scratch, quantized from f32 (`glu_quant_fp8`: no bf16 row in between).
pub(super) fn glu_rows_fp8(dev: &Device, f: GluActivation, gate_up: &CudaSlice<bf16>, fp8: &mut Fp8Scratch, n: usize, inter: usize) -> Result<()> {
    let (gate, up) = halves(gate_up, n, inter)?;
    let (mut q, mut s) = fp8.views_mut(n, inter)?;
    glu_quant_fp8(dev, &gate, &up, f, &mut q, &mut s, ScaleGranularity::Group128)
}

impl GpuModel {
    /// x `[t, hidden]` → x: gate_up GEMM, glu, down GEMM. BitNet: the gate_up projection reads the
    /// int8 codes the post-attention norm wrote, and ffn_sub_norm writes down's. FP8 down: the
    /// GLU writes its e4m3 codes (glu_quant_fp8).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dense_mlp(
        &self,
        ex: Exec,
        bufs: &mut Buffers,
        t: usize,
        gate_up: &GpuLinear,
        down: &GpuLinear,
        inter: usize,
        sub_norm: Option<&CudaSlice<bf16>>,
        norm: RmsNormConfig,
    ) -> Result<()> {
        let (dev, h) = (ex.dev, self.config.hidden_size);
        if self.int8_norms() {
            gate_up.forward_quantized(dev, &bufs.int8, t, h, &mut bufs.gate_up)?;
        } else if gate_up.fp8_k().is_some() {
            // The post-attention norm wrote its e4m3 codes (GpuLayer::fp8_post_norm).
            gate_up.forward_fp8(dev, ex.gemm, &bufs.fp8, t, &mut rows_mut(&mut bufs.gate_up, t, 2 * inter)?)?;
        } else {
            gate_up.forward(dev, ex.gemm, &mut bufs.fp8, &rows(&bufs.x, t, h)?, &mut rows_mut(&mut bufs.gate_up, t, 2 * inter)?)?;
        }
        if sub_norm.is_none() && down.fp8_k().is_some() {
            glu_rows_fp8(dev, self.act, &bufs.gate_up, &mut bufs.fp8, t, inter)?;
            return down.forward_fp8(dev, ex.gemm, &bufs.fp8, t, &mut rows_mut(&mut bufs.x, t, h)?);
        }
        glu_rows(dev, self.act, &bufs.gate_up, &mut bufs.act, t, inter)?;
        match sub_norm {
            Some(w) => {
                {
                    let (mut q8, mut s8) = bufs.int8.views_mut(t, inter)?;
                    rms_norm_quantize_activations(dev, &rows(&bufs.act, t, inter)?, &vector(w, inter)?, norm, &mut q8, &mut s8)?;
                }
                down.forward_quantized(dev, &bufs.int8, t, inter, &mut bufs.x)
            }
            None => down.forward(dev, ex.gemm, &mut bufs.fp8, &rows(&bufs.act, t, inter)?, &mut rows_mut(&mut bufs.x, t, h)?),
        }
    }
}
