//! GQA attention (cuda/attention_gqa.cu, mma.sync; cuda/attention_sm90.cu, wgmma prefill on
//! Hopper) and MLA decode over the latent cache (cuda/attention_mla.cu, head dims (576, 512)):
//! varlen prefill / append and paged decode with
//! split-KV, causal (bottom-right aligned), sliding window, soft-capping, optional LSE, and
//! `merge_states`.
//!
//! Queries of sequence s are rows `cu_seqlens_q[s]..cu_seqlens_q[s+1]` of q and are the last
//! `q_len` positions of that sequence (chunked prefill, decode and speculative decode are the
//! same call). K/V come contiguous (varlen, `cu_seqlens_kv`) or from the paged cache. An
//! [`AttentionPlan`], computed once per batch on the host from the sequence lengths, fixes the
//! split-KV factor and the workspace size, and is reused by every layer.

mod plan;

pub use plan::{AttentionKernel, AttentionPlan, MAX_SPLITS};

use super::{check_aligned, check_contiguous, check_device, check_dtype, check_inner_dense, check_no_overlap, check_shape, launch};
use crate::kv_cache::{BlockTableView, KvCacheView};
use crate::tma::{encode_tma, tma_box, TmaBox};
use crate::{ffi, DType, Device, Error, Result, TensorView, TensorViewMut};

/// (head_dim, head_dim_v) pairs the kernels are built for; 192/128 is MLA prefill (naive form)
/// and [`MLA_DECODE`] MLA decode (absorbed form).
pub const HEAD_DIMS: &[(usize, usize)] = &[(64, 64), (96, 96), (128, 128), (256, 256), (192, 128), MLA_DECODE];

/// MLA decode's head dims (DeepSeek-V2/V3, absorbed form): queries `[W_ukᵀ q_nope | q_pe]` of
/// kv_lora_rank + rope_dim = 512 + 64, keys the latent cache rows `[c_kv | k_pe]`, values their
/// first 512 elements — the same memory ([`KvCacheView::latent`]; contiguous K/V: `v` must be a
/// view of `k`'s first 512 columns). The output is the attention-weighted latent per head; the
/// caller applies W_uv. The latent cache may be FP8 e4m3 with one scale (k = v) on the portable
/// kernel: plan such batches with [`AttentionPlan::with_kv`] (the Hopper kernel, which
/// [`AttentionPlan::new`] picks above 16 rows per sequence, reads bf16 / f16 only).
pub const MLA_DECODE: (usize, usize) = (576, 512);

/// Masking and scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionConfig {
    /// Softmax scale on q·k.
    pub scale: f32,
    /// Bottom-right aligned causal mask.
    pub causal: bool,
    /// Sliding window: keys more than this many positions left of the query are masked.
    pub window_left: Option<u32>,
    /// Logit soft-capping `cap · tanh(s / cap)` on the scaled score.
    pub softcap: Option<f32>,
}

impl AttentionConfig {
    /// Causal, scale 1/√head_dim, no window, no soft-cap.
    pub fn causal(head_dim: usize) -> Self {
        Self { scale: 1.0 / (head_dim as f32).sqrt(), causal: true, window_left: None, softcap: None }
    }
}

/// Where K and V come from. `C` is the K/V element type: the query dtype, or
/// [`crate::F8E4M3`] for an FP8 paged cache (K ≈ stored · k_scale, V ≈ stored · v_scale, the
/// cache's [`crate::kv_cache::KvScales`]; decode and prefill / append: plan with
/// [`AttentionPlan::with_kv`], which picks the kernel).
pub enum KvInput<'v, 'a, C: DType> {
    /// K and V as tensors of their own, sequence after sequence (the query dtype only).
    Contiguous {
        /// `[total_kv, num_kv_heads, head_dim]`, token-major (any token stride).
        k: &'v TensorView<'a, C, 3>,
        /// `[total_kv, num_kv_heads, head_dim_v]`; MLA decode: k's first 512 elements.
        v: &'v TensorView<'a, C, 3>,
        /// `[num_seqs + 1]`: sequence s owns rows `cu_seqlens_kv[s]..cu_seqlens_kv[s + 1]`.
        cu_seqlens_kv: &'v TensorView<'a, i32, 1>,
    },
    /// The paged cache (src/kv_cache.rs: key j of sequence s is row `j % page_size` of page
    /// `block_table[s][j / page_size]`).
    Paged {
        /// K and V pages `[num_pages, page_size, num_kv_heads, head_dim]`, with the FP8 scales.
        cache: &'v KvCacheView<'a, C>,
        /// The batch's block table `[num_seqs, max_pages_per_seq]` and sequence lengths (keys).
        table: &'v BlockTableView<'a>,
    },
}

/// Whether a wgmma kernel is built for these head dims and K/V (attention_sm90.cu: (64, 64),
/// (128, 128), K/V in the query dtype or FP8; attention_mla_sm90.cu: MLA decode's, not FP8) and
/// the GPU can run it.
fn wgmma_supports(dev: &Device, head_dim: usize, head_dim_v: usize, fp8: bool) -> bool {
    dev.info().compute_capability == (9, 0) && ((head_dim == head_dim_v && matches!(head_dim, 64 | 128)) || ((head_dim, head_dim_v) == MLA_DECODE && !fp8))
}

/// What MLA decode requires of V.
const MLA_V: &str = "MLA decode's V (head dims (576, 512)): the first 512 elements of K's rows, the same memory (KvCacheView::latent)";

fn check_heads(op: &'static str, num_q_heads: usize, num_kv_heads: usize, head_dim: usize, head_dim_v: usize) -> Result<()> {
    if !HEAD_DIMS.contains(&(head_dim, head_dim_v)) {
        return Err(Error::Unsupported {
            op,
            what: "(head_dim, head_dim_v): (64, 64), (96, 96), (128, 128), (256, 256), (192, 128), (576, 512)",
            value: format!("({head_dim}, {head_dim_v})"),
        });
    }
    if num_kv_heads == 0 || num_q_heads == 0 || !num_q_heads.is_multiple_of(num_kv_heads) {
        return Err(Error::Unsupported {
            op,
            what: "GQA ratio (num_q_heads must be a positive multiple of num_kv_heads)",
            value: format!("{num_q_heads} / {num_kv_heads}"),
        });
    }
    Ok(())
}

/// q / out `[tokens, heads, head_dim]`, addressed as `token · stride + head · head_dim`: heads
/// packed, and a token stride that keeps 16-byte alignment.
fn check_token_major<T>(op: &'static str, arg: &'static str, view_shape: [usize; 3], strides: [usize; 3]) -> Result<()> {
    check_inner_dense(op, arg, &strides)?;
    if view_shape[1] > 1 && strides[1] != view_shape[2] {
        return Err(Error::Unsupported { op, what: "head stride (heads must be packed)", value: format!("{arg}: {strides:?}") });
    }
    if view_shape[0] > 1 && strides[0].checked_mul(std::mem::size_of::<T>()).is_none_or(|b| !b.is_multiple_of(16)) {
        return Err(Error::Misaligned { op, arg, align: 16 });
    }
    Ok(())
}

/// K / V rows read with 16-byte copies: dense head_dim, token (slot) and head strides in whole
/// 16-byte units.
fn check_kv_strides<C>(op: &'static str, arg: &'static str, strides: &[usize]) -> Result<()> {
    check_inner_dense(op, arg, strides)?;
    // (checked: a size-1 dimension's stride is not bounded by the view's extent)
    if strides[..strides.len() - 1].iter().any(|s| s.checked_mul(std::mem::size_of::<C>()).is_none_or(|b| !b.is_multiple_of(16))) {
        return Err(Error::Misaligned { op, arg, align: 16 });
    }
    Ok(())
}

/// The TMA boxes of the wgmma prefill kernel's key tiles (attention.h: tma_rows, tma_k, tma_v).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KvTma {
    /// Rows per box: the kernel's keys per tile (contiguous) or min(page_size, keys per tile).
    box_rows: usize,
    k: TmaBox,
    v: TmaBox,
}

/// K and V of `p` (strides and sizes filled in, elements of `elem` bytes) as 2-D byte tensors
/// for TMA boxes of `key_tile` keys: `None` where the layout does not allow them — pages of
/// fewer than 8 slots (a box would sit less than 1024 bytes into the stage's swizzle atoms),
/// pages not back to back (slot s of page g must be row g · page_size + s of one map), a head
/// span wider than the token stride (head-major layouts), or sizes past the kernel's int32
/// coordinates.
fn kv_tma(p: &ffi::wc_attention_params, key_tile: usize, elem: usize) -> Option<KvTma> {
    let page_size = p.page_size as usize;
    let box_rows = if page_size == 0 { key_tile } else { page_size.min(key_tile) };
    if page_size != 0 && (page_size < 8 || !page_size.is_multiple_of(box_rows) || p.page_stride != page_size as i64 * p.k_stride || p.v_stride != p.k_stride) {
        return None;
    }
    let rows = if page_size == 0 { p.total_kv } else { p.num_pages * page_size as i64 };
    if rows <= 0 || rows > i32::MAX as i64 {
        return None;
    }
    let map = |stride: i64, head_stride: i64| {
        // (checked: a one-row K's token stride, or one head's head stride, is any value)
        let row_bytes = (p.num_kv_heads as i64 - 1).checked_mul(head_stride)?.checked_add(p.head_dim as i64)?.checked_mul(elem as i64)?;
        let stride_bytes = stride.checked_mul(elem as i64)?;
        (row_bytes <= stride_bytes && row_bytes <= i32::MAX as i64 && stride_bytes % 16 == 0 && stride_bytes < 1 << 40)
            .then(|| tma_box(rows as usize, row_bytes as usize, stride_bytes as usize, box_rows))
    };
    Some(KvTma { box_rows, k: map(p.k_stride, p.k_head_stride)?, v: map(p.v_stride, p.v_head_stride)? })
}

fn check_i32_vec(op: &'static str, arg: &'static str, dev: &Device, t: &TensorView<i32, 1>, len: usize) -> Result<()> {
    check_shape(op, arg, &t.shape(), &[len])?;
    check_contiguous(op, arg, &t.shape(), &t.strides())?;
    check_device(op, arg, dev, t.stream())
}

/// Attention over a batch. q: `[total_q, num_q_heads, head_dim]`, out: `[total_q,
/// num_q_heads, head_dim_v]`, lse:
/// optional `[total_q, num_q_heads]` (f32, natural log). `workspace`: at least
/// `plan.workspace_len()` f32 elements when `plan.num_splits > 1`.
///
/// Device-side data (cu_seqlens, seq_lens, block tables) is clamped in the kernel: lengths past
/// the tensors and page ids outside `[0, num_pages)` never cause an access outside them
/// (such keys are masked); query rows past `plan.max_q_len` are not computed.
#[allow(clippy::too_many_arguments)]
pub fn attention<T: DType, C: DType>(
    dev: &Device,
    q: &TensorView<T, 3>,
    cu_seqlens_q: &TensorView<i32, 1>,
    kv: KvInput<'_, '_, C>,
    plan: &AttentionPlan,
    cfg: &AttentionConfig,
    out: &mut TensorViewMut<T, 3>,
    lse: Option<&mut TensorViewMut<f32, 2>>,
    workspace: Option<&mut TensorViewMut<f32, 1>>,
) -> Result<()> {
    const OP: &str = "attention";
    check_dtype::<T>(OP, &[ffi::wc_dtype_WC_BF16, ffi::wc_dtype_WC_F16])?;
    let [total_q, num_q_heads, head_dim] = q.shape();
    let head_dim_v = plan.head_dim_v;
    check_heads(OP, num_q_heads, plan.num_kv_heads, head_dim, head_dim_v)?;
    if num_q_heads != plan.num_q_heads || head_dim != plan.head_dim || total_q < plan.total_q {
        return Err(Error::ShapeMismatch { op: OP, arg: "q", expected: format!("{plan:?}"), got: format!("{:?}", q.shape()) });
    }
    let num_kv_heads = plan.num_kv_heads;
    let num_seqs = plan.num_seqs;
    // The grid's x is one CTA per (sequence, kv head), and the kernels index both with int.
    super::check_fits_i32(OP, "num_seqs · num_kv_heads (CTAs of the grid's x)", num_seqs.saturating_mul(num_kv_heads))?;
    let mla = (head_dim, head_dim_v) == MLA_DECODE;
    let fp8 = C::TAG == ffi::wc_dtype_WC_E4M3;
    let wgmma = match plan.kernel {
        AttentionKernel::Wgmma if wgmma_supports(dev, head_dim, head_dim_v, fp8) => true,
        AttentionKernel::MmaSync => false,
        k => {
            return Err(Error::Unsupported {
                op: OP,
                what: "plan.kernel (Wgmma needs compute capability 9.0, head dims (64, 64), (128, 128) or (576, 512), and K/V in the query dtype or, below (576, 512), an FP8 paged cache; Auto is resolved by AttentionPlan: plan an FP8 cache's batches with AttentionPlan::with_kv::<F8E4M3>)",
                value: format!("{k:?}, cc {:?}, head dims ({head_dim}, {head_dim_v}), K/V {}", dev.info().compute_capability, C::NAME),
            })
        }
    };
    if C::TAG != T::TAG && !(fp8 && matches!(kv, KvInput::Paged { .. })) {
        return Err(Error::Unsupported {
            op: OP,
            what: "K/V dtype (the query dtype, or e4m3 for a paged cache: its scales)",
            value: format!("{} with {} queries", C::NAME, T::NAME),
        });
    }
    check_token_major::<T>(OP, "q", q.shape(), q.strides())?;
    check_shape(OP, "out", &out.shape(), &[total_q, num_q_heads, head_dim_v])?;
    check_token_major::<T>(OP, "out", out.shape(), out.strides())?;
    check_no_overlap(OP, "out", &out.shape(), &out.strides())?;
    check_i32_vec(OP, "cu_seqlens_q", dev, cu_seqlens_q, num_seqs + 1)?;
    check_device(OP, "q", dev, q.stream())?;
    check_device(OP, "out", dev, out.stream())?;
    if !cfg.scale.is_finite() {
        return Err(Error::Unsupported { op: OP, what: "scale", value: cfg.scale.to_string() });
    }
    if let Some(cap) = cfg.softcap {
        if !(cap.is_finite() && cap > 0.0) {
            return Err(Error::Unsupported { op: OP, what: "softcap", value: cap.to_string() });
        }
    }
    if cfg.window_left.is_some_and(|w| w > i32::MAX as u32) {
        return Err(Error::Unsupported { op: OP, what: "window_left", value: format!("{:?}", cfg.window_left) });
    }
    if !(1..=MAX_SPLITS).contains(&plan.num_splits) {
        return Err(Error::Unsupported { op: OP, what: "plan.num_splits (1 to MAX_SPLITS, 64)", value: plan.num_splits.to_string() });
    }
    // The grid's y dimension holds the query tiles of a sequence's rows (queries · group): at
    // most 65535 tiles of the plan's kernel's rows (16 to 128).
    if !plan.rows_fit_grid(num_q_heads / num_kv_heads) {
        return Err(Error::Unsupported { op: OP, what: "max_q_len (query rows per sequence: 65535 tiles of the kernel's)", value: plan.max_q_len.to_string() });
    }
    if let Some(l) = &lse {
        check_shape(OP, "lse", &l.shape(), &[total_q, num_q_heads])?;
        check_contiguous(OP, "lse", &l.shape(), &l.strides())?;
        check_device(OP, "lse", dev, l.stream())?;
    }
    if plan.num_splits > 1 {
        match &workspace {
            Some(ws) if ws.numel() >= plan.workspace_len() && ws.is_contiguous() => check_device(OP, "workspace", dev, ws.stream())?,
            other => {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    arg: "workspace",
                    expected: format!("at least {} contiguous f32 elements", plan.workspace_len()),
                    got: format!("{:?}", other.as_ref().map(|w| w.shape())),
                })
            }
        }
    }
    // K/V: shapes and layout; pointers come later (all guards must live until the launch).
    let mut p = ffi::wc_attention_params { k_scale: 1.0, v_scale: 1.0, ..Default::default() };
    match &kv {
        KvInput::Contiguous { k, v, cu_seqlens_kv } => {
            check_shape(OP, "k", &k.shape()[1..], &[num_kv_heads, head_dim])?;
            check_shape(OP, "v", &v.shape(), &[k.shape()[0], num_kv_heads, head_dim_v])?;
            check_kv_strides::<C>(OP, "k", &k.strides())?;
            check_kv_strides::<C>(OP, "v", &v.strides())?;
            if mla && v.strides() != k.strides() {
                return Err(Error::Unsupported { op: OP, what: MLA_V, value: format!("k strides {:?}, v strides {:?}", k.strides(), v.strides()) });
            }
            check_i32_vec(OP, "cu_seqlens_kv", dev, cu_seqlens_kv, num_seqs + 1)?;
            check_device(OP, "k", dev, k.stream())?;
            check_device(OP, "v", dev, v.stream())?;
            p.total_kv = k.shape()[0] as i64;
            p.k_stride = k.strides()[0] as i64;
            p.v_stride = v.strides()[0] as i64;
            p.k_head_stride = k.strides()[1] as i64;
            p.v_head_stride = v.strides()[1] as i64;
        }
        KvInput::Paged { cache, table } => {
            let layout = cache.layout();
            if head_dim != head_dim_v && !mla {
                return Err(Error::Unsupported { op: OP, what: "paged cache with head_dim ≠ head_dim_v (other than MLA decode's latent cache)", value: format!("({head_dim}, {head_dim_v})") });
            }
            // The kernels read V with K's strides and head_dim_v columns: a latent cache's V (its
            // first kv_lora_rank columns) serves MLA decode only.
            if cache.v().shape()[3] != head_dim_v || cache.v().strides() != layout.strides {
                let what = if mla { MLA_V } else { "V pages (head_dim_v wide, in K's layout: a latent cache serves MLA decode only)" };
                return Err(Error::Unsupported { op: OP, what, value: format!("v pages {:?} strides {:?}", cache.v().shape(), cache.v().strides()) });
            }
            check_shape(OP, "cache (num_kv_heads, head_dim)", &[layout.num_kv_heads, layout.head_dim], &[num_kv_heads, head_dim])?;
            check_kv_strides::<C>(OP, "cache", &layout.strides)?;
            check_device(OP, "cache", dev, cache.k().stream())?;
            check_device(OP, "cache", dev, cache.v().stream())?;
            check_shape(OP, "block_table", &[table.num_seqs()], &[num_seqs])?;
            check_device(OP, "block_table", dev, table.block_table().stream())?;
            check_device(OP, "seq_lens", dev, table.seq_lens().stream())?;
            let scales = cache.scales();
            if mla && scales.k != scales.v {
                return Err(Error::Unsupported { op: OP, what: "MLA latent cache scales (V is K: one scale, k = v)", value: format!("{scales:?}") });
            }
            p.k_scale = scales.k;
            p.v_scale = scales.v;
            p.page_size = layout.page_size as i32;
            p.num_pages = layout.num_pages as i64;
            p.total_kv = layout.num_slots() as i64;
            let bt = table.block_table();
            p.block_table_stride = crate::ops::row_stride(bt.shape()[0], bt.strides()[0], bt.shape()[1]) as i64;
            p.page_stride = layout.strides[0] as i64;
            p.k_stride = layout.strides[1] as i64;
            p.v_stride = layout.strides[1] as i64;
            p.k_head_stride = layout.strides[2] as i64;
            p.v_head_stride = layout.strides[2] as i64;
        }
    }
    if num_seqs == 0 || plan.total_q == 0 {
        return Ok(());
    }

    let stream = dev.stream();
    let (q_ptr, _gq) = q.device_ptr(stream);
    let (cu_q, _gcq) = cu_seqlens_q.device_ptr(stream);
    let mut guards_kv = Vec::with_capacity(4);
    let (k_ptr, v_ptr);
    match &kv {
        KvInput::Contiguous { k, v, cu_seqlens_kv } => {
            let (kp, gk) = k.device_ptr(stream);
            let (vp, gv) = v.device_ptr(stream);
            let (cp, gc) = cu_seqlens_kv.device_ptr(stream);
            p.cu_seqlens_kv = cp as *const i32;
            (k_ptr, v_ptr) = (kp, vp);
            guards_kv.extend([gk, gv, gc]);
        }
        KvInput::Paged { cache, table } => {
            let (kp, gk) = cache.k().device_ptr(stream);
            let (vp, gv) = cache.v().device_ptr(stream);
            let (bp, gb) = table.block_table().device_ptr(stream);
            let (sp, gs) = table.seq_lens().device_ptr(stream);
            p.block_table = bp as *const i32;
            p.seq_lens = sp as *const i32;
            (k_ptr, v_ptr) = (kp, vp);
            guards_kv.extend([gk, gv, gb, gs]);
        }
    }
    for (arg, ptr) in [("q", q_ptr), ("k", k_ptr), ("v", v_ptr)] {
        check_aligned(OP, arg, ptr)?;
    }
    if mla && k_ptr != v_ptr {
        return Err(Error::Unsupported { op: OP, what: MLA_V, value: format!("k at {k_ptr:#x}, v at {v_ptr:#x}") });
    }
    let out_stride = out.strides()[0];
    let (out_ptr, _go) = out.device_ptr_mut(stream);
    // The Hopper kernels store out in 4-byte pairs and the partials in 8-byte ones; out's token
    // stride is 16-byte whole (check_token_major), so its first row must be too.
    check_aligned(OP, "out", out_ptr)?;
    let lse_guard = lse.map(|l| l.device_ptr_mut(stream));
    let ws_guard = workspace.filter(|_| plan.num_splits > 1).map(|w| w.device_ptr_mut(stream));
    if let Some((ws, _)) = &ws_guard {
        check_aligned(OP, "workspace", *ws)?;
        let n = (plan.num_splits * plan.total_q * num_q_heads) as u64;
        p.partial_out = *ws as *mut f32;
        p.partial_lse = (*ws + n * head_dim_v as u64 * 4) as *mut f32;
    }
    p.q = q_ptr as *const _;
    p.k = k_ptr as *const _;
    p.v = v_ptr as *const _;
    p.out = out_ptr as *mut _;
    p.lse = lse_guard.as_ref().map_or(std::ptr::null_mut(), |(l, _)| *l as *mut f32);
    p.cu_seqlens_q = cu_q as *const i32;
    p.q_stride = q.strides()[0] as i64;
    p.out_stride = out_stride as i64;
    p.total_q = plan.total_q as i64;
    p.num_seqs = num_seqs as i32;
    p.num_q_heads = num_q_heads as i32;
    p.num_kv_heads = num_kv_heads as i32;
    p.head_dim = head_dim as i32;
    p.head_dim_v = head_dim_v as i32;
    p.max_q_len = plan.max_q_len as i32;
    p.causal = cfg.causal as i32;
    p.window_left = cfg.window_left.map_or(-1, |w| w as i32);
    p.num_splits = plan.num_splits as i32;
    p.merge_pdl = plan.merge_pdl as i32;
    p.scale = cfg.scale;
    p.softcap = cfg.softcap.unwrap_or(0.0);
    p.dtype = T::TAG;
    p.kv_dtype = C::TAG;
    p.kernel = if wgmma { ffi::wc_attention_kernel_WC_ATTENTION_WGMMA } else { ffi::wc_attention_kernel_WC_ATTENTION_MMA };
    // The wgmma kernels read whole key tiles by TMA where the layout allows (K/V in the query
    // dtype; MLA's reads only tma_k, V being K's rows). TMA only speeds the loads up: a map the
    // driver will not encode leaves every tile to cp.async.
    if wgmma && plan.tma && C::TAG == T::TAG {
        if let Some(t) = kv_tma(&p, plan.tile_shape().1, std::mem::size_of::<C>()) {
            match (encode_tma(k_ptr, &t.k), encode_tma(v_ptr, &t.v)) {
                (Ok(k), Ok(v)) => (p.tma_k, p.tma_v, p.tma_rows) = (k, v, t.box_rows as i32),
                (Err(e), _) | (_, Err(e)) => {
                    static SAID: std::sync::Once = std::sync::Once::new();
                    SAID.call_once(|| eprintln!("warpcore: attention's TMA maps refused ({e}; {t:?}): key tiles by cp.async"));
                }
            }
        }
    }
    // SAFETY: shapes, strides, alignment, dtype, contexts and the workspace size were
    // validated above; device-side lengths and page ids are clamped by the kernel. The
    // guards (`_g*`, guards_kv, lse_guard, ws_guard) live until the launch is queued.
    let r = launch(OP, dev, |s| unsafe { ffi::wc_attention(&p, s) });
    drop(guards_kv);
    r
}

/// Combines two partial results over disjoint keys: out_a/out_b `[rows, head_dim]`, lse_a/lse_b
/// `[rows]` (f32, natural log) → out `[rows, head_dim]` and optionally lse. All contiguous.
pub fn merge_states<T: DType>(
    dev: &Device,
    out_a: &TensorView<T, 2>,
    lse_a: &TensorView<f32, 1>,
    out_b: &TensorView<T, 2>,
    lse_b: &TensorView<f32, 1>,
    out: &mut TensorViewMut<T, 2>,
    lse: Option<&mut TensorViewMut<f32, 1>>,
) -> Result<()> {
    const OP: &str = "merge_states";
    check_dtype::<T>(OP, super::FLOAT_DTYPES)?;
    let [rows, head_dim] = out_a.shape();
    super::check_nonempty(OP, "out_a (head_dim)", &[head_dim])?;
    super::check_fits_i32(OP, "head_dim", head_dim)?;
    check_shape(OP, "out_b", &out_b.shape(), &[rows, head_dim])?;
    check_shape(OP, "out", &out.shape(), &[rows, head_dim])?;
    check_shape(OP, "lse_a", &lse_a.shape(), &[rows])?;
    check_shape(OP, "lse_b", &lse_b.shape(), &[rows])?;
    for (arg, shape, strides) in [("out_a", out_a.shape(), out_a.strides()), ("out_b", out_b.shape(), out_b.strides()), ("out", out.shape(), out.strides())] {
        check_contiguous(OP, arg, &shape, &strides)?;
    }
    for (arg, l) in [("lse_a", lse_a), ("lse_b", lse_b)] {
        check_contiguous(OP, arg, &l.shape(), &l.strides())?;
    }
    if let Some(l) = &lse {
        check_contiguous(OP, "lse", &l.shape(), &l.strides())?;
        check_shape(OP, "lse", &l.shape(), &[rows])?;
        check_device(OP, "lse", dev, l.stream())?;
    }
    for (arg, s) in [("out_a", out_a.stream()), ("out_b", out_b.stream()), ("lse_a", lse_a.stream()), ("lse_b", lse_b.stream()), ("out", out.stream())] {
        check_device(OP, arg, dev, s)?;
    }
    if rows == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let (a, _ga) = out_a.device_ptr(stream);
    let (la, _gla) = lse_a.device_ptr(stream);
    let (b, _gb) = out_b.device_ptr(stream);
    let (lb, _glb) = lse_b.device_ptr(stream);
    let (o, _go) = out.device_ptr_mut(stream);
    let lse_guard = lse.map(|l| l.device_ptr_mut(stream));
    let p = ffi::wc_merge_states_params {
        out_a: a as *const _,
        lse_a: la as *const f32,
        out_b: b as *const _,
        lse_b: lb as *const f32,
        out: o as *mut _,
        lse: lse_guard.as_ref().map_or(std::ptr::null_mut(), |(l, _)| *l as *mut f32),
        rows: rows as i64,
        head_dim: head_dim as i32,
        dtype: T::TAG,
    };
    // SAFETY: all shapes equal and contiguous, dtype and contexts validated above.
    launch(OP, dev, |s| unsafe { ffi::wc_merge_states(&p, s) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Params of a bf16 K/V layout: `page_size` 0 = contiguous over `rows` tokens.
    fn params(page_size: i32, num_kv_heads: i32, head_dim: i32, k_stride: i64, rows: i64) -> ffi::wc_attention_params {
        let mut p = ffi::wc_attention_params { page_size, num_kv_heads, head_dim, k_stride, v_stride: k_stride, k_head_stride: head_dim as i64, v_head_stride: head_dim as i64, ..Default::default() };
        if page_size == 0 {
            p.total_kv = rows;
        } else {
            p.num_pages = rows / page_size as i64;
            p.total_kv = rows;
            p.page_stride = page_size as i64 * k_stride;
        }
        p
    }

    #[test]
    fn tma_boxes_follow_the_layout() {
        // Contiguous, 8 kv heads of 128 in a token stride of 1024 elements: rows of 2 KB, one
        // box of 128 keys.
        let t = kv_tma(&params(0, 8, 128, 1024, 5000), 128, 2).unwrap();
        assert_eq!(t.box_rows, 128);
        assert_eq!(t.k, tma_box(5000, 2048, 2048, 128));
        assert_eq!(t.v, t.k);
        // A padded token stride: the map covers the heads, the stride skips the padding.
        assert_eq!(kv_tma(&params(0, 2, 64, 136, 10), 128, 2).unwrap().k, tma_box(10, 256, 272, 128));
        // Paged: boxes of a page up to the tile, rows = every slot of the cache.
        for (page, rows) in [(8, 8), (16, 16), (64, 64), (128, 128), (256, 128)] {
            let t = kv_tma(&params(page, 1, 128, 128, 100 * page as i64), 128, 2).unwrap();
            assert_eq!((t.box_rows, t.k.dims[1]), (rows, 100 * page as u64), "page {page}");
        }
        // MLA's 64-key tiles: pages of 256 load 64 rows a box.
        assert_eq!(kv_tma(&params(256, 1, 576, 576, 2560), 64, 2).unwrap().box_rows, 64);
    }

    #[test]
    fn tma_is_refused_where_the_layout_does_not_allow_it() {
        // Pages under 8 slots (a box would start inside a 1024-byte swizzle atom).
        assert_eq!(kv_tma(&params(1, 1, 128, 128, 100), 128, 2), None);
        assert_eq!(kv_tma(&params(4, 1, 128, 128, 100), 128, 2), None);
        // Pages not back to back (padded page stride), or K and V slot strides that differ.
        let mut p = params(16, 1, 128, 128, 160);
        p.page_stride += 8;
        assert_eq!(kv_tma(&p, 128, 2), None);
        let mut p = params(16, 1, 128, 128, 160);
        p.v_stride = 256;
        assert_eq!(kv_tma(&p, 128, 2), None);
        // A head span wider than the token stride (heads outermost).
        let mut p = params(0, 4, 128, 128, 100);
        p.k_head_stride = 100 * 128;
        assert_eq!(kv_tma(&p, 128, 2), None);
        // No rows, or more than the kernel's int32 coordinates reach.
        assert_eq!(kv_tma(&params(0, 1, 128, 128, 0), 128, 2), None);
        assert_eq!(kv_tma(&params(0, 1, 128, 128, 1 << 31), 128, 2), None);
    }
}
