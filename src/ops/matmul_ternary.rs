//! The ternary family (cuda/matmul_ternary.cu): BitNet b1.58's linear layers,
//! `quantize_activations` then `matmul_ternary`.
//!
//! - [`quantize_activations`]: x `[m, k]` (bf16 / f16 / f32) → int8 codes q `[m, k]` and one f32
//!   scale per row (token), `x ≈ q / scale`, exactly as transformers' `ActQuant` computes them
//!   (`reference::matmul_ternary::quantize_activations`, bit for bit).
//! - [`rms_norm_quantize_activations`], [`fused_add_rms_norm_quantize_activations`]: the same
//!   codes of `rms_norm(x)` (after `residual += x`), from the f32 normalised values — BitNet's
//!   norms each feed a ternary projection, so the normalised row is never stored.
//! - [`matmul_ternary`]: `out[m, n] = ((q · vᵀ) / scale (+ bias)) · w_scale` with ternary weights
//!   v `[n, k]` in the checkpoint's packed layout (`[n / 4, k]` bytes, transformers'
//!   `pack_weights`: see `reference::matmul_ternary::pack`), exact int32 accumulation on the int8
//!   tensor cores (mma.sync: every sm_80+ GPU), one rounding at the store.
//!
//! k a multiple of 16 (at most [`MAX_K`]), rows 16-byte aligned; any m; n a multiple of 4.
//! The tile is chosen per shape by [`plan`], a pure host function.

use super::rms_norm::{check_config, RmsNormConfig};
use super::{row_stride, check_aligned, check_rows_apart, check_device, check_dtype, check_fits_i32, check_inner_dense, check_no_overlap, check_nonempty, check_rows_aligned, check_shape, launch, FLOAT_DTYPES};
use crate::{ffi, DType, Device, Error, Result, TensorView, TensorViewMut};

/// Largest k [`matmul_ternary`] takes (its int32 sums stay exact up to here).
pub const MAX_K: usize = ffi::WC_TERNARY_MAX_K as usize;
/// Ternary values per packed byte.
pub const VALUES_PER_BYTE: usize = crate::reference::matmul_ternary::VALUES_PER_BYTE;
/// The tile heights of the mma.sync kernel (every sm_80+ GPU): 16 rows with eight warps
/// splitting k (decode: `n / 32` CTAs stream the weights), and 128 × 128 tiles (prefill).
pub const BLOCK_M: [usize; 2] = [16, 128];
/// The Hopper prefill tile (compute capability 9.0 only): 64 rows × 512 columns on int8 wgmma
/// (cuda/matmul_ternary_sm90.cu).
pub const HOPPER_BLOCK_M: usize = 64;
/// Bytes of k one CTA of either tile consumes per pipeline step: split-k slices whole steps.
pub const K_STEP_BYTES: usize = 512;
/// Largest k-split the planner chooses.
pub const MAX_K_SPLITS: usize = 16;
/// Most row tiles one launch holds (the grid's y dimension): m ≤ 65535 · block_m.
pub const MAX_ROW_TILES: usize = 65535;
/// Words (int32) of the split-k workspace, a `Device` scratch buffer zeroed once and left zero
/// by every launch: [`ffi::WC_TERNARY_SPLIT_K_TILE_WORDS`] per 16 × 32 output tile, so up to
/// 511 tiles split (the planner splits only grids below three CTAs per SM).
pub const SPLIT_K_WORKSPACE_WORDS: usize = 1 << 18;
/// The name of that workspace among a `Device`'s scratch buffers.
const SPLIT_K_OP: &str = "matmul_ternary split-k";
/// CTAs per SM the planner's split aims at: a 16-row CTA keeps at most three 4 KB weight
/// stages in flight, and about three of them per SM cover the memory latency at the H200's
/// bandwidth share of an SM (4.06 TB/s / 132 ≈ 31 GB/s, ~1 µs). Four fit (64 registers,
/// 48 KB of shared memory each). A constant the H200 must confirm (docs/matmul_ternary.md).
const SPLIT_CTAS_PER_SM: usize = 3;

/// Packed ternary weights `[n / 4, k]` (u8, transformers' layout) and their scale (the
/// checkpoint's `weight_scale`): `w[j, c] = v[j, c] · scale`.
#[derive(Clone, Copy, Debug)]
pub struct PackedTernary<'v, 'a> {
    /// The ternary weights, four per byte: `[n / 4, k]` (transformers' `pack_weights` layout).
    pub packed: &'v TensorView<'a, u8, 2>,
    /// The per-tensor weight scale (the checkpoint's `weight_scale`).
    pub scale: f32,
}

/// The tile `matmul_ternary` runs a problem with: its height (one of [`BLOCK_M`]) and, for the
/// 16-row tile, how many CTAs share each output tile's k (split-k, 1 = none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TernaryTile {
    /// Rows of out per CTA: 16 or 128 (mma.sync), or [`HOPPER_BLOCK_M`] (wgmma, Hopper).
    pub block_m: usize,
    /// CTAs per output tile, each over a contiguous slice of the [`K_STEP_BYTES`] k-steps
    /// (block_m 16 only; at most the number of k-steps).
    pub k_splits: usize,
}

impl TernaryTile {
    /// The tile of height `block_m`, k not split.
    pub fn unsplit(block_m: usize) -> Self {
        Self { block_m, k_splits: 1 }
    }

    /// Output tiles (CTAs before any split) of an `[m, ·] × [n, ·]ᵀ` problem.
    pub fn tiles(&self, m: usize, n: usize) -> usize {
        let width = match self.block_m {
            16 => 32,
            HOPPER_BLOCK_M => 512,
            _ => 128,
        };
        m.div_ceil(self.block_m).saturating_mul(n.div_ceil(width))
    }
}

impl std::fmt::Display for TernaryTile {
    /// "block16", "block16 k4": the bench's key suffix.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "block{}", self.block_m)?;
        if self.k_splits > 1 {
            write!(f, " k{}", self.k_splits)?;
        }
        Ok(())
    }
}

/// The tile for an `[m, k] × [n, k]ᵀ` problem on `sm_count` SMs: 16-row tiles up to 64 rows, or
/// while 128-row tiles would leave SMs idle (fewer CTAs than SMs); otherwise the Hopper tile on
/// `hopper` GPUs (compute capability 9.0), 128-row tiles elsewhere. A 16-row grid below three
/// CTAs per SM splits k over up to that many (at most the k-steps and [`MAX_K_SPLITS`]):
/// BitNet 2B's 2560-wide projections (80 tiles) run as 4 × 80 CTAs. Choices the H200 must
/// confirm (docs/matmul_ternary.md).
pub fn plan(m: usize, n: usize, k: usize, sm_count: usize, hopper: bool) -> TernaryTile {
    if !(m <= 64 || TernaryTile::unsplit(BLOCK_M[1]).tiles(m, n) < sm_count) {
        let wgmma = TernaryTile::unsplit(HOPPER_BLOCK_M);
        return from_env(if hopper && check_tile(m, n, k, wgmma).is_ok() { wgmma } else { TernaryTile::unsplit(BLOCK_M[1]) });
    }
    let tile = TernaryTile::unsplit(BLOCK_M[0]);
    let tiles = tile.tiles(m, n).max(1);
    let k_splits = (SPLIT_CTAS_PER_SM.saturating_mul(sm_count) / tiles).min(k.div_ceil(K_STEP_BYTES)).clamp(1, MAX_K_SPLITS);
    let tile = TernaryTile { k_splits, ..tile };
    if check_tile(m, n, k, tile).is_ok() {
        from_env(tile)
    } else {
        TernaryTile::unsplit(BLOCK_M[0])
    }
}

/// The plan's tile under the fallbacks (should a kernel misbehave on some GPU):
/// `WARPCORE_TERNARY_SPLIT_K=off` leaves k unsplit, `WARPCORE_TERNARY_KERNEL=mma.sync` takes
/// the 128-row mma.sync tile where the plan had the Hopper one.
fn from_env(t: TernaryTile) -> TernaryTile {
    static ENV: std::sync::OnceLock<(bool, bool)> = std::sync::OnceLock::new();
    let (split_off, mma_sync) = *ENV.get_or_init(|| {
        (
            std::env::var("WARPCORE_TERNARY_SPLIT_K").is_ok_and(|e| e == "off"),
            std::env::var("WARPCORE_TERNARY_KERNEL").is_ok_and(|e| e == "mma.sync"),
        )
    });
    if t.block_m == HOPPER_BLOCK_M && mma_sync {
        TernaryTile::unsplit(BLOCK_M[1])
    } else if split_off {
        TernaryTile::unsplit(t.block_m)
    } else {
        t
    }
}

/// Why `tile` cannot run an `[m, k] × [n, k]ᵀ` problem (the kernel's contract), if it cannot.
fn check_tile(m: usize, n: usize, k: usize, tile: TernaryTile) -> std::result::Result<(), &'static str> {
    if !BLOCK_M.contains(&tile.block_m) && tile.block_m != HOPPER_BLOCK_M {
        return Err("block_m (16, 128, or 64 on Hopper)");
    }
    if m.div_ceil(tile.block_m) > MAX_ROW_TILES {
        return Err("block_m (at most 65535 row tiles: m ≤ 65535 · block_m)");
    }
    if tile.k_splits == 0 {
        return Err("k_splits (at least 1)");
    }
    if tile.k_splits > 1 {
        if tile.block_m != BLOCK_M[0] {
            return Err("k_splits (split-k with the 16-row tile only)");
        }
        if tile.k_splits > k.div_ceil(K_STEP_BYTES) || tile.k_splits > 65535 {
            return Err("k_splits (at most the 512-byte k-steps)");
        }
        if tile.tiles(m, n).saturating_mul(ffi::WC_TERNARY_SPLIT_K_TILE_WORDS as usize) > SPLIT_K_WORKSPACE_WORDS {
            return Err("k_splits (too many output tiles for the split-k workspace)");
        }
    }
    Ok(())
}

/// The codes `[m, k]` and scales `[m]` an activation quantizer writes.
fn check_codes(op: &'static str, dev: &Device, q: &TensorViewMut<i8, 2>, scale: &TensorViewMut<f32, 1>, m: usize, k: usize) -> Result<()> {
    check_shape(op, "q", &q.shape(), &[m, k])?;
    check_inner_dense(op, "q", &q.strides())?;
    check_no_overlap(op, "q", &q.shape(), &q.strides())?;
    check_shape(op, "scale", &scale.shape(), &[m])?;
    check_inner_dense(op, "scale", &scale.strides())?;
    check_device(op, "q", dev, q.stream())?;
    check_device(op, "scale", dev, scale.stream())
}

fn check_k(op: &'static str, k: usize) -> Result<()> {
    check_nonempty(op, "k", &[k])?;
    if !k.is_multiple_of(16) {
        return Err(Error::Unsupported { op, what: "k (a multiple of 16)", value: k.to_string() });
    }
    check_fits_i32(op, "k", k)
}

/// `q[r, :] = clamp(rint(x[r, :] · scale[r]), −128, 127)`, `scale[r] = (1 / max(absmax(x[r, :]),
/// 1e-5)) · 127` in f32 (transformers' `ActQuant`).
///
/// x `[m, k]`, q `[m, k]` (any row strides, rows 16-byte aligned), scale `[m]` (stride 1).
/// Errors before any launch: shapes, k = 0 (`Empty`), k not a multiple of 16 (`Unsupported`),
/// misaligned rows (`Misaligned`). m = 0 is a no-op.
pub fn quantize_activations<T: DType>(
    dev: &Device,
    x: &TensorView<T, 2>,
    q: &mut TensorViewMut<i8, 2>,
    scale: &mut TensorViewMut<f32, 1>,
) -> Result<()> {
    const OP: &str = "quantize_activations";
    check_dtype::<T>(OP, FLOAT_DTYPES)?;
    let [m, k] = x.shape();
    check_k(OP, k)?;
    check_fits_i32(OP, "m", m)?;
    check_inner_dense(OP, "x", &x.strides())?;
    check_device(OP, "x", dev, x.stream())?;
    check_codes(OP, dev, q, scale, m, k)?;
    if m == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let (x_ptr, _gx) = x.device_ptr(stream);
    let (ldx, ldq) = (x.strides()[0], q.strides()[0]);
    let (q_ptr, _gq) = q.device_ptr_mut(stream);
    let (s_ptr, _gs) = scale.device_ptr_mut(stream);
    check_rows_aligned::<T>(OP, "x", x_ptr, m, ldx)?;
    check_rows_apart(OP, "x", m, ldx, k)?;
    check_rows_aligned::<i8>(OP, "q", q_ptr, m, ldq)?;
    let params = ffi::wc_quantize_activations_params {
        x: x_ptr as *const _,
        q: q_ptr as *mut _,
        scale: s_ptr as *mut _,
        m: m as i64,
        k: k as i64,
        ldx: row_stride(m, ldx, k) as i64,
        ldq: row_stride(m, ldq, k) as i64,
        dtype: T::TAG,
    };
    // SAFETY: x, q and scale were checked for shape, strides, alignment and device above; the
    // guards keep the buffers alive until the launch is queued.
    launch(OP, dev, |s| unsafe { ffi::wc_quantize_activations(&params, s) })
}

/// Shared by the two fused ops: x `[m, k]`, residual (fused add) `[m, k]`, weight `[k]`.
#[allow(clippy::too_many_arguments)]
fn norm_quantize<T: DType>(
    op: &'static str,
    dev: &Device,
    x: &TensorView<T, 2>,
    residual: Option<&mut TensorViewMut<T, 2>>,
    weight: &TensorView<T, 1>,
    cfg: RmsNormConfig,
    q: &mut TensorViewMut<i8, 2>,
    scale: &mut TensorViewMut<f32, 1>,
) -> Result<()> {
    check_dtype::<T>(op, FLOAT_DTYPES)?;
    check_config(op, cfg)?;
    let [m, k] = x.shape();
    check_k(op, k)?;
    check_fits_i32(op, "m", m)?;
    check_inner_dense(op, "x", &x.strides())?;
    check_shape(op, "weight", &weight.shape(), &[k])?;
    check_inner_dense(op, "weight", &weight.strides())?;
    check_codes(op, dev, q, scale, m, k)?;
    if let Some(r) = &residual {
        check_shape(op, "residual", &r.shape(), &[m, k])?;
        check_inner_dense(op, "residual", &r.strides())?;
        check_no_overlap(op, "residual", &r.shape(), &r.strides())?;
        check_device(op, "residual", dev, r.stream())?;
    }
    check_device(op, "x", dev, x.stream())?;
    check_device(op, "weight", dev, weight.stream())?;
    if m == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let (x_ptr, _gx) = x.device_ptr(stream);
    let (w_ptr, _gw) = weight.device_ptr(stream);
    let (ldx, ldq) = (x.strides()[0], q.strides()[0]);
    let ldr = residual.as_ref().map_or(0, |r| r.strides()[0]);
    let mut res_guard = residual.map(|r| r.device_ptr_mut(stream));
    let (q_ptr, _gq) = q.device_ptr_mut(stream);
    let (s_ptr, _gs) = scale.device_ptr_mut(stream);
    check_rows_aligned::<T>(op, "x", x_ptr, m, ldx)?;
    check_rows_apart(op, "x", m, ldx, k)?;
    check_aligned(op, "weight", w_ptr)?;
    check_rows_aligned::<i8>(op, "q", q_ptr, m, ldq)?;
    let res_ptr = match res_guard.as_mut() {
        Some((p, _)) => {
            check_rows_aligned::<T>(op, "residual", *p, m, ldr)?;
            check_rows_apart(op, "residual", m, ldr, k)?;
            *p as *mut std::ffi::c_void
        }
        None => std::ptr::null_mut(),
    };
    let params = ffi::wc_rms_norm_quantize_activations_params {
        x: x_ptr as *const _,
        residual: res_ptr,
        weight: w_ptr as *const _,
        q: q_ptr as *mut _,
        scale: s_ptr as *mut _,
        m: m as i64,
        k: k as i64,
        ldx: row_stride(m, ldx, k) as i64,
        ldr: row_stride(m, ldr, k) as i64,
        ldq: row_stride(m, ldq, k) as i64,
        eps: cfg.eps,
        weight_offset: cfg.weight_offset,
        dtype: T::TAG,
    };
    // SAFETY: x, residual, weight, q and scale were checked for shape, strides, alignment and
    // device above; the guards keep the buffers alive until the launch is queued.
    launch(op, dev, |s| unsafe { ffi::wc_rms_norm_quantize_activations(&params, s) })
}

/// `q, scale = quantize_activations(rms_norm(x) · (weight_offset + weight))` with the normalised
/// values kept in f32 (never rounded to T). x `[m, k]`, weight `[k]`, q `[m, k]`, scale `[m]`;
/// rows 16-byte aligned, k a multiple of 16. Errors as [`quantize_activations`], plus a bad
/// eps or weight offset (`Unsupported`).
pub fn rms_norm_quantize_activations<T: DType>(
    dev: &Device,
    x: &TensorView<T, 2>,
    weight: &TensorView<T, 1>,
    cfg: RmsNormConfig,
    q: &mut TensorViewMut<i8, 2>,
    scale: &mut TensorViewMut<f32, 1>,
) -> Result<()> {
    norm_quantize("rms_norm_quantize_activations", dev, x, None, weight, cfg, q, scale)
}

/// `residual = round(x + residual)` (stored, in T), then [`rms_norm_quantize_activations`] of
/// the new residual: a decoder's "add the sublayer's output, normalise, project" with the
/// normalised row never stored.
pub fn fused_add_rms_norm_quantize_activations<T: DType>(
    dev: &Device,
    x: &TensorView<T, 2>,
    residual: &mut TensorViewMut<T, 2>,
    weight: &TensorView<T, 1>,
    cfg: RmsNormConfig,
    q: &mut TensorViewMut<i8, 2>,
    scale: &mut TensorViewMut<f32, 1>,
) -> Result<()> {
    norm_quantize("fused_add_rms_norm_quantize_activations", dev, x, Some(residual), weight, cfg, q, scale)
}

/// `out[r, j] = ((Σ_c q[r, c] · v[j, c]) / q_scale[r] (+ bias[j])) · w.scale` — the
/// AutoBitLinear product of BitNet b1.58 (transformers adds the bias before the weight scale).
///
/// q `[m, k]` int8 and q_scale `[m]` ([`quantize_activations`]' outputs), w.packed `[n / 4, k]`,
/// bias `[n]` and out `[m, n]` in `O` (bf16, f16 or f32). Rows of q and w.packed 16-byte aligned.
/// Errors before any launch: shapes (`ShapeMismatch`), k = 0 or n = 0 (`Empty`), k not a multiple
/// of 16 or above [`MAX_K`], a non-finite weight scale (`Unsupported`), misaligned rows
/// (`Misaligned`). m = 0 is a no-op.
pub fn matmul_ternary<O: DType>(
    dev: &Device,
    q: &TensorView<i8, 2>,
    q_scale: &TensorView<f32, 1>,
    w: PackedTernary,
    bias: Option<&TensorView<O, 1>>,
    out: &mut TensorViewMut<O, 2>,
) -> Result<()> {
    matmul_ternary_with_tile(dev, q, q_scale, w, bias, out, None)
}

/// [`matmul_ternary`] with the tile forced (None: the [`plan`]'s): the tests run both tiles and
/// several k-splits on every shape, the bench times the alternatives to the plan. A tile the
/// kernel cannot run the problem with is `Unsupported`.
pub fn matmul_ternary_with_tile<O: DType>(
    dev: &Device,
    q: &TensorView<i8, 2>,
    q_scale: &TensorView<f32, 1>,
    w: PackedTernary,
    bias: Option<&TensorView<O, 1>>,
    out: &mut TensorViewMut<O, 2>,
    tile: Option<TernaryTile>,
) -> Result<()> {
    const OP: &str = "matmul_ternary";
    check_dtype::<O>(OP, FLOAT_DTYPES)?;
    let [m, k] = q.shape();
    check_k(OP, k)?;
    if k > MAX_K {
        return Err(Error::Unsupported { op: OP, what: "k (at most 65536)", value: k.to_string() });
    }
    if !w.scale.is_finite() {
        return Err(Error::Unsupported { op: OP, what: "weight scale", value: w.scale.to_string() });
    }
    let [packed_rows, wk] = w.packed.shape();
    check_nonempty(OP, "w.packed (n / 4)", &[packed_rows])?;
    check_shape(OP, "w.packed", &[packed_rows, wk], &[packed_rows, k])?;
    let n = packed_rows.saturating_mul(VALUES_PER_BYTE); // saturated: refused by check_fits_i32
    for (what, v) in [("m", m), ("n", n)] {
        check_fits_i32(OP, what, v)?;
    }
    check_inner_dense(OP, "q", &q.strides())?;
    check_inner_dense(OP, "w.packed", &w.packed.strides())?;
    check_shape(OP, "q_scale", &q_scale.shape(), &[m])?;
    check_inner_dense(OP, "q_scale", &q_scale.strides())?;
    check_shape(OP, "out", &out.shape(), &[m, n])?;
    check_inner_dense(OP, "out", &out.strides())?;
    check_no_overlap(OP, "out", &out.shape(), &out.strides())?;
    if let Some(b) = bias {
        check_shape(OP, "bias", &b.shape(), &[n])?;
        check_inner_dense(OP, "bias", &b.strides())?;
        check_device(OP, "bias", dev, b.stream())?;
    }
    for (arg, s) in [("q", q.stream()), ("q_scale", q_scale.stream()), ("w.packed", w.packed.stream()), ("out", out.stream())] {
        check_device(OP, arg, dev, s)?;
    }
    let hopper = dev.info().compute_capability == (9, 0);
    // The planner's tile too: past 65535 · 128 rows no tile fits one launch.
    let tile = tile.unwrap_or_else(|| plan(m, n, k, dev.info().sm_count as usize, hopper));
    check_tile(m, n, k, tile).map_err(|what| Error::Unsupported { op: OP, what, value: tile.to_string() })?;
    if tile.block_m == HOPPER_BLOCK_M && !hopper {
        return Err(Error::Unsupported { op: OP, what: "block_m 64 (the Hopper tile: compute capability 9.0)", value: format!("{:?}", dev.info().compute_capability) });
    }
    if m == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let (q_ptr, _gq) = q.device_ptr(stream);
    let (qs_ptr, _gqs) = q_scale.device_ptr(stream);
    let (w_ptr, _gw) = w.packed.device_ptr(stream);
    let bias_guard = bias.map(|b| b.device_ptr(stream));
    let (ldq, ldw, ldo) = (q.strides()[0], w.packed.strides()[0], out.strides()[0]);
    let (o_ptr, _go) = out.device_ptr_mut(stream);
    check_rows_aligned::<i8>(OP, "q", q_ptr, m, ldq)?;
    check_rows_apart(OP, "q", m, ldq, k)?;
    check_rows_aligned::<u8>(OP, "w.packed", w_ptr, packed_rows, ldw)?;
    check_rows_apart(OP, "w.packed", packed_rows, ldw, k)?;
    let mut params = ffi::wc_matmul_ternary_params {
        q: q_ptr as *const _,
        q_scale: qs_ptr as *const _,
        w: w_ptr as *const _,
        w_scale: w.scale,
        bias: bias_guard.as_ref().map_or(std::ptr::null(), |(p, _)| *p as *const _),
        out: o_ptr as *mut _,
        m: m as i64,
        n: n as i64,
        k: k as i64,
        ldq: row_stride(m, ldq, k) as i64,
        ldw: row_stride(packed_rows, ldw, k) as i64,
        ldo: row_stride(m, ldo, n) as i64,
        block_m: tile.block_m as i32,
        out_dtype: O::TAG,
        k_splits: tile.k_splits as i32,
        workspace: std::ptr::null_mut(),
        workspace_words: 0,
    };
    // SAFETY: every view was checked for shape, strides, alignment and device above, k is within
    // the kernel's exact range, and the tile is one the kernel runs this problem with
    // (check_tile: its split-k tiles fit the workspace); the guards keep the buffers alive until
    // the launch is queued.
    let run = |p: &ffi::wc_matmul_ternary_params| launch(OP, dev, |s| unsafe { ffi::wc_matmul_ternary(p, s) });
    if tile.k_splits > 1 {
        // The Device's split-k workspace: zeroed when first handed out, and every launch leaves
        // it zero (each tile's last CTA clears its words); held while the launch is queued.
        dev.with_scratch(SPLIT_K_OP, SPLIT_K_WORKSPACE_WORDS, |ws_ptr| {
            params.workspace = ws_ptr as *mut i32;
            params.workspace_words = SPLIT_K_WORKSPACE_WORDS as i64;
            run(&params)
        })
    } else {
        run(&params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `plan` is a public pure function: any sizes give a tile, not an overflow panic.
    #[test]
    fn plan_takes_any_sizes() {
        for (m, n, k) in [(usize::MAX, usize::MAX, 16), (1, usize::MAX, usize::MAX), (usize::MAX, 1, 1)] {
            let _ = plan(m, n, k, usize::MAX, false);
            let _ = plan(m, n, k, 132, true);
        }
    }

    #[test]
    fn plan_takes_small_tiles_for_decode_and_thin_grids() {
        for m in [1, 7, 16, 17, 64] {
            assert_eq!(plan(m, 2560, 2560, 132, false).block_m, 16, "m = {m}");
        }
        // 128-row tiles once they fill the SMs: 1024 × 2560 is 8 · 20 = 160 CTAs.
        assert_eq!(plan(1024, 2560, 2560, 132, false), TernaryTile::unsplit(128));
        // 256 × 2560 is 2 · 20 = 40 CTAs of 128 rows: keep 16-row tiles (16 · 80 CTAs, no split).
        assert_eq!(plan(256, 2560, 2560, 132, false), TernaryTile::unsplit(16));
        assert!(BLOCK_M.contains(&plan(100_000, 4, 16, 132, false).block_m));
        // On Hopper the prefill tile is the wgmma one; decode tiles do not change.
        assert_eq!(plan(1024, 2560, 2560, 132, true), TernaryTile::unsplit(HOPPER_BLOCK_M));
        assert_eq!(plan(256, 2560, 2560, 132, true), TernaryTile::unsplit(16));
        assert_eq!(plan(1, 2560, 2560, 132, true), plan(1, 2560, 2560, 132, false));
        assert_eq!(TernaryTile::unsplit(HOPPER_BLOCK_M).tiles(2048, 2560), 32 * 5);
    }

    #[test]
    fn plan_splits_k_where_16_row_tiles_leave_the_sms_short() {
        // BitNet b1.58 2B4T at decode on the H200, one GEMM per projection: q / o 2560 × 2560
        // (80 tiles, 5 k-steps), k / v 640 × 2560 (20, 5), gate / up 6912 × 2560 (216), down
        // 2560 × 6912 (80, 14); and a fused qkv 3840 × 2560 (120, 5) would split 3 ways.
        assert_eq!(plan(1, 2560, 2560, 132, false), TernaryTile { block_m: 16, k_splits: 4 });
        assert_eq!(plan(1, 640, 2560, 132, false), TernaryTile { block_m: 16, k_splits: 5 });
        assert_eq!(plan(1, 6912, 2560, 132, false), TernaryTile::unsplit(16));
        assert_eq!(plan(1, 2560, 6912, 132, false), TernaryTile { block_m: 16, k_splits: 4 });
        assert_eq!(plan(1, 3840, 2560, 132, false), TernaryTile { block_m: 16, k_splits: 3 });
        assert_eq!(plan(32, 2560, 6912, 132, false), TernaryTile { block_m: 16, k_splits: 2 });
        // Never more slices than k-steps: one step of k (k <= 512) never splits.
        assert_eq!(plan(1, 64, 512, 132, false), TernaryTile::unsplit(16));
        assert_eq!(plan(1, 64, 1040, 132, false).k_splits, 3);
        assert_eq!(plan(1, 4, 65536, 132, false).k_splits, MAX_K_SPLITS);
        for (m, n, k) in [(1, 3840, 2560), (64, 4, 16), (3, 1000, 20_000), (300, 2560, 512), (5000, 64, 4096)] {
            let t = plan(m, n, k, 132, false);
            assert_eq!(check_tile(m, n, k, t), Ok(()), "{m} × {n} × {k}: {t}");
            assert!(t.k_splits == 1 || t.tiles(m, n) * t.k_splits <= SPLIT_CTAS_PER_SM * 132, "{t}");
        }
    }

    #[test]
    fn tiles_outside_the_kernels_contract_are_refused() {
        assert!(check_tile(1, 2560, 2560, TernaryTile::unsplit(32)).is_err());
        assert!(check_tile(1, 2560, 2560, TernaryTile { block_m: 16, k_splits: 0 }).is_err());
        assert!(check_tile(1, 2560, 2560, TernaryTile { block_m: 128, k_splits: 2 }).is_err());
        assert!(check_tile(1, 2560, 2560, TernaryTile { block_m: HOPPER_BLOCK_M, k_splits: 2 }).is_err());
        assert_eq!(check_tile(1, 2560, 2560, TernaryTile::unsplit(HOPPER_BLOCK_M)), Ok(()));
        assert!(check_tile(1, 2560, 2560, TernaryTile { block_m: 16, k_splits: 6 }).is_err());
        assert_eq!(check_tile(1, 2560, 2560, TernaryTile { block_m: 16, k_splits: 5 }), Ok(()));
        // 512 tiles of 513 words are more than the workspace holds; 511 fit.
        assert!(check_tile(16, 512 * 32, 2560, TernaryTile { block_m: 16, k_splits: 2 }).is_err());
        assert_eq!(check_tile(16, 511 * 32, 2560, TernaryTile { block_m: 16, k_splits: 2 }), Ok(()));
        assert_eq!(TernaryTile { block_m: 16, k_splits: 4 }.to_string(), "block16 k4");
        assert_eq!(TernaryTile::unsplit(128).to_string(), "block128");
        // The grid's y dimension holds 65535 row tiles (it failed at launch, untyped, before).
        assert_eq!(check_tile(65535 * 64, 2560, 2560, TernaryTile::unsplit(HOPPER_BLOCK_M)), Ok(()));
        assert!(check_tile(65535 * 64 + 1, 2560, 2560, TernaryTile::unsplit(HOPPER_BLOCK_M)).is_err());
        assert!(check_tile(65535 * 16 + 1, 4, 2560, TernaryTile::unsplit(16)).is_err());
        assert!(check_tile(65535 * 128 + 1, 2560, 2560, TernaryTile::unsplit(128)).is_err());
    }

    #[test]
    fn the_decode_tile_declares_no_static_shared_memory() {
        // Its 48 KB of dynamic shared memory fill the default a launch may use without the
        // opt-in, and that default counts static shared memory too (a static split-k flag once
        // failed every decode launch). An empty table (host emulation) has nothing to check.
        use crate::resources::KERNELS;
        let decode: Vec<_> = KERNELS.iter().filter(|k| k.name.contains("matmul_ternary_kernel<wc::TernaryTile<1, 1, 1, 1, 8>")).collect();
        assert!(KERNELS.is_empty() || !decode.is_empty(), "no decode tile in the ptxas table");
        for k in decode {
            assert_eq!(k.shared_bytes, 0, "{} on {}", k.name, k.arch);
        }
    }

    #[test]
    fn plan_keeps_the_row_tiles_within_one_grid() {
        // Past 65535 Hopper tiles of 64 rows the 128-row tile takes over (4.2 M tokens).
        assert_eq!(plan(65535 * 64, 2560, 2560, 132, true), TernaryTile::unsplit(HOPPER_BLOCK_M));
        assert_eq!(plan(65535 * 64 + 1, 2560, 2560, 132, true), TernaryTile::unsplit(128));
        assert_eq!(check_tile(65535 * 128, 2560, 2560, plan(65535 * 128, 2560, 2560, 132, true)), Ok(()));
    }
}
