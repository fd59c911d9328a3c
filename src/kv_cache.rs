//! The paged KV cache: the one definition every op that writes or reads it uses (append_kv,
//! rope_append_kv, qk_norm_rope_append_kv now; the attention kernels next).
//!
//! # Layout
//!
//! ```text
//! K pages, V pages   [num_pages, page_size, num_kv_heads, head_dim]   two tensors, one layout
//! block table        [num_seqs, max_pages_per_seq]  i32: page ids of each sequence, in order
//! seq_lens           [num_seqs]                     i32: tokens of each sequence in the cache
//! slot               page · page_size + row          (row = position within the page)
//! ```
//!
//! - Token `p` of sequence `s` lives in page `block_table[s, p / page_size]` at row
//!   `p % page_size`: its K row for head `h` is `k_pages[page, row, h, :]`. Entries of a block
//!   table row past `ceil(seq_len / page_size)` are unused (the host allocator writes −1);
//!   readers must not dereference them, and must treat a page id outside `[0, num_pages)` as
//!   absent rather than read through it.
//! - `page_size` ∈ [`PAGE_SIZES`] (1, 8, 16, …, 256: powers of two, so slot → (page, row) is a
//!   shift and a mask). `head_dim` is dense (stride 1); the page, slot and head strides are free
//!   (a page may be padded), but K and V share them, so a kernel takes one set of strides.
//! - K and V are separate tensors (as in vLLM's FlashAttention backend and FlashInfer's NHD
//!   layout): an append writes one contiguous `num_kv_heads · head_dim` row into each, and a
//!   decode kernel streams K and V pages as separate contiguous blocks. A combined
//!   `[num_pages, 2, page_size, …]` layout would need a measured reason (none yet).
//! - dtypes: bf16 or f16 (the model's dtype, stored exactly), or FP8 e4m3 ([`crate::F8E4M3`])
//!   with one scale per tensor (per layer): **stored = round_e4m3(x / scale)** (f32 division,
//!   round to nearest even, saturating at ±448), and a reader dequantizes **x ≈ stored · scale**.
//!   The convention is vLLM's (`k_scale`, `v_scale`); a calibrated scale is `amax / 448`.
//!   Scales are 1 for bf16/f16 caches ([`KvCacheMut::with_scales`] rejects anything else).
//! - Writes (`append_kv`): token `t` goes to `slot_mapping[t]`; a negative slot is padding and
//!   is skipped; a slot `>= num_pages · page_size` is skipped too (never written out of the
//!   cache) and counted in the cache's [`SlotErrors`] counter when one is attached
//!   ([`KvCacheMut::count_errors_in`]); with the `debug-sync` feature the op then returns
//!   [`crate::Error::IndexOutOfRange`]. Two tokens with the same slot race (the caller's bug).
//!
//! - MLA (DeepSeek-V2/V3) caches one latent row per token instead of K and V: pages
//!   `[num_pages, page_size, 1, kv_lora_rank + rope_dim]`, rows `[c_kv | k_pe]`, the same page
//!   and slot rules; [`KvCacheView::latent`] reads it as K = the row, V = its first
//!   `kv_lora_rank` elements (one read serves both in the MLA decode kernel).
//!
//! [`KvCacheView`] (read: attention) and [`KvCacheMut`] (write: append) carry the K and V page
//! views, the layout and the scales, so an op takes "a paged KV cache" as one argument;
//! [`BlockTableView`] carries the block table and sequence lengths of one batch (shared by every
//! layer's cache). [`PageAllocator`] builds block tables and slot mappings on the host.

mod allocator;

pub use allocator::{BlockTable, PageAllocator, SeqId};

use crate::ops::{check_contiguous, check_inner_dense, check_no_overlap, check_nonempty, check_shape};
use crate::{ffi, DType, Device, Error, Result, TensorView, TensorViewMut};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut, SyncOnDrop};

/// The page sizes the cache supports (tokens per page).
pub const PAGE_SIZES: &[usize] = &[1, 8, 16, 32, 64, 128, 256];

/// The dtypes a cache may have: bf16, f16 (the inputs' dtype) or FP8 e4m3.
pub const CACHE_DTYPES: &[ffi::wc_dtype] = &[ffi::wc_dtype_WC_BF16, ffi::wc_dtype_WC_F16, ffi::wc_dtype_WC_E4M3];

/// Per-tensor (per-layer) scales of an FP8 cache: stored = round_e4m3(x / scale), x ≈ stored ·
/// scale. Both 1 for bf16 / f16 caches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KvScales {
    /// The K pages' scale.
    pub k: f32,
    /// The V pages' scale.
    pub v: f32,
}

impl KvScales {
    /// No scaling (bf16 / f16 caches).
    pub const ONE: Self = Self { k: 1.0, v: 1.0 };
    /// The K and V scales (e.g. calibrated `amax / 448` each); checked when attached to a cache.
    pub fn new(k: f32, v: f32) -> Self {
        Self { k, v }
    }
}

impl Default for KvScales {
    fn default() -> Self {
        Self::ONE
    }
}

/// The geometry K and V pages share: shape `[num_pages, page_size, num_kv_heads, head_dim]` and
/// strides (elements; the last is 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheLayout {
    /// Pages in the cache (page ids are `0..num_pages`).
    pub num_pages: usize,
    /// Tokens per page, one of [`PAGE_SIZES`].
    pub page_size: usize,
    /// KV heads per token (1 for MLA's latent cache).
    pub num_kv_heads: usize,
    /// Elements per head (for MLA's latent cache: `kv_lora_rank + rope_dim`).
    pub head_dim: usize,
    /// (page, slot within page, head, element) strides.
    pub strides: [usize; 4],
}

impl KvCacheLayout {
    /// Dense pages.
    pub fn dense(num_pages: usize, page_size: usize, num_kv_heads: usize, head_dim: usize) -> Result<Self> {
        let shape = [num_pages, page_size, num_kv_heads, head_dim];
        Self::new("KvCacheLayout::dense", shape, crate::contiguous_strides(shape))
    }

    /// A layout from a shape and strides: page_size in [`PAGE_SIZES`], at least one page, head,
    /// element; head_dim dense; rows that do not overlap; sizes the kernels index with i32/i64.
    pub fn new(op: &'static str, shape: [usize; 4], strides: [usize; 4]) -> Result<Self> {
        let [num_pages, page_size, num_kv_heads, head_dim] = shape;
        if !PAGE_SIZES.contains(&page_size) {
            return Err(Error::Unsupported { op, what: "page_size (1, 8, 16, 32, 64, 128 or 256)", value: page_size.to_string() });
        }
        check_nonempty(op, "pages", &shape)?;
        check_inner_dense(op, "pages", &strides)?;
        check_no_overlap(op, "pages", &shape, &strides)?;
        // Page ids are i32 in block tables; heads and head_dim index within a block.
        for (what, v) in [("num_pages", num_pages), ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)] {
            crate::ops::check_fits_i32(op, what, v)?;
        }
        Ok(Self { num_pages, page_size, num_kv_heads, head_dim, strides })
    }

    /// `[num_pages, page_size, num_kv_heads, head_dim]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.num_pages, self.page_size, self.num_kv_heads, self.head_dim]
    }

    /// Token slots in the cache (num_pages · page_size); valid slots are `0..num_slots()`.
    pub fn num_slots(&self) -> usize {
        self.num_pages.saturating_mul(self.page_size)
    }

    /// Element offset of `(slot, head, 0)` from the start of the pages.
    /// (Saturating, and a page_size of 0 read as 1: the fields are public, so a layout built by
    /// hand may hold any values; [`KvCacheLayout::new`]'s never saturate.)
    pub fn offset(&self, slot: usize, head: usize) -> usize {
        let ps = self.page_size.max(1);
        (slot / ps)
            .saturating_mul(self.strides[0])
            .saturating_add((slot % ps).saturating_mul(self.strides[1]))
            .saturating_add(head.saturating_mul(self.strides[2]))
    }

    /// Elements a buffer must hold for these pages (0 when a dimension is 0).
    pub fn extent(&self) -> usize {
        if self.num_slots() == 0 || self.num_kv_heads == 0 || self.head_dim == 0 {
            return 0;
        }
        self.offset(self.num_slots() - 1, self.num_kv_heads - 1).saturating_add(self.head_dim)
    }

    /// K and V views must have this layout's shape and one set of strides.
    fn of_views(op: &'static str, k: ([usize; 4], [usize; 4]), v: ([usize; 4], [usize; 4])) -> Result<Self> {
        check_shape(op, "v_pages", &v.0, &k.0)?;
        if v.1 != k.1 {
            return Err(Error::Unsupported {
                op,
                what: "v_pages strides (K and V pages share one layout)",
                value: format!("k {:?}, v {:?}", k.1, v.1),
            });
        }
        Self::new(op, k.0, k.1)
    }
}

fn check_cache_dtype<C: DType>(op: &'static str) -> Result<()> {
    crate::ops::check_dtype::<C>(op, CACHE_DTYPES)
}

/// A latent cache's pages: a cache dtype, a valid layout, and kv_lora_rank inside the row.
fn latent_layout<C: DType>(op: &'static str, shape: [usize; 4], strides: [usize; 4], kv_lora_rank: usize) -> Result<KvCacheLayout> {
    check_cache_dtype::<C>(op)?;
    let layout = KvCacheLayout::new(op, shape, strides)?;
    if kv_lora_rank == 0 || kv_lora_rank > layout.head_dim {
        return Err(Error::Unsupported { op, what: "kv_lora_rank (1 ..= the row width)", value: format!("{kv_lora_rank} of {}", layout.head_dim) });
    }
    Ok(layout)
}

/// The scales a cache of `C` may have: finite and positive, and 1 unless the cache is FP8.
pub(crate) fn check_scales<C: DType>(op: &'static str, s: KvScales) -> Result<()> {
    for v in [s.k, s.v] {
        if !(v.is_finite() && v > 0.0) {
            return Err(Error::Unsupported { op, what: "KV cache scale (finite, > 0)", value: v.to_string() });
        }
    }
    if C::TAG != ffi::wc_dtype_WC_E4M3 && s != KvScales::ONE {
        return Err(Error::Unsupported { op, what: "KV cache scale on a bf16/f16 cache (must be 1)", value: format!("{s:?}") });
    }
    Ok(())
}

/// A device-side counter of cache slots the kernels skipped because they were past the cache
/// (`>= num_pages · page_size`). Attach it with [`KvCacheMut::count_errors_in`]; read it with
/// [`SlotErrors::count`] (which waits for queued work).
#[derive(Debug)]
pub struct SlotErrors {
    count: CudaSlice<u32>,
}

impl SlotErrors {
    /// A zeroed counter on `dev`.
    pub fn new(dev: &Device) -> Result<Self> {
        Ok(Self { count: dev.zeros::<u32>(1)? })
    }
    /// Out-of-range slots counted so far (synchronizes the stream).
    pub fn count(&self, dev: &Device) -> Result<u32> {
        Ok(dev.download(&self.count)?[0])
    }
    /// Back to zero (queued on the device's stream).
    pub fn reset(&mut self, dev: &Device) -> Result<()> {
        Ok(dev.stream().memset_zeros(&mut self.count)?)
    }
}

/// A read-only paged KV cache (what attention kernels take).
#[derive(Debug)]
pub struct KvCacheView<'a, C: DType> {
    k: TensorView<'a, C, 4>,
    v: TensorView<'a, C, 4>,
    layout: KvCacheLayout,
    scales: KvScales,
}

impl<'a, C: DType> KvCacheView<'a, C> {
    /// K and V pages `[num_pages, page_size, num_kv_heads, head_dim]`, one layout; scales 1.
    pub fn new(k: TensorView<'a, C, 4>, v: TensorView<'a, C, 4>) -> Result<Self> {
        const OP: &str = "KvCacheView::new";
        check_cache_dtype::<C>(OP)?;
        let layout = KvCacheLayout::of_views(OP, (k.shape(), k.strides()), (v.shape(), v.strides()))?;
        Ok(Self { k, v, layout, scales: KvScales::ONE })
    }
    /// MLA's latent cache (DeepSeek-V2/V3): one tensor of pages `[num_pages, page_size,
    /// num_kv_heads (1), kv_lora_rank + rope_dim]` whose rows are `[c_kv | k_pe]`. K is the whole
    /// row and V its first `kv_lora_rank` elements — the same memory, read once by the MLA
    /// decode kernel (attention with head dims (576, 512)).
    pub fn latent(pages: TensorView<'a, C, 4>, kv_lora_rank: usize) -> Result<Self> {
        let layout = latent_layout::<C>("KvCacheView::latent", pages.shape(), pages.strides(), kv_lora_rank)?;
        let v = pages.narrow(3, 0, kv_lora_rank)?;
        Ok(Self { k: pages, v, layout, scales: KvScales::ONE })
    }
    /// Sets the FP8 scales (only an FP8 cache may have scales other than 1). The attention
    /// kernels decode e4m3 without a NaN test: a NaN code (0x7F / 0xFF, which warpcore's writers
    /// never store: they saturate) reads as ±480 · scale.
    pub fn with_scales(mut self, scales: KvScales) -> Result<Self> {
        check_scales::<C>("KvCacheView::with_scales", scales)?;
        self.scales = scales;
        Ok(self)
    }
    /// The K pages `[num_pages, page_size, num_kv_heads, head_dim]` (a latent cache: whole rows).
    pub fn k(&self) -> &TensorView<'a, C, 4> {
        &self.k
    }
    /// The V pages, same layout as K (a latent cache: the first `kv_lora_rank` of each K row).
    pub fn v(&self) -> &TensorView<'a, C, 4> {
        &self.v
    }
    /// The shape and strides K and V share.
    pub fn layout(&self) -> KvCacheLayout {
        self.layout
    }
    /// The FP8 dequantization scales (1 for bf16 / f16).
    pub fn scales(&self) -> KvScales {
        self.scales
    }
}

/// A writable paged KV cache (what append ops take), optionally with a [`SlotErrors`] counter.
#[derive(Debug)]
pub struct KvCacheMut<'a, C: DType> {
    k: TensorViewMut<'a, C, 4>,
    /// None: MLA's latent cache (K pages only; V is the first `kv_lora_rank` of each row).
    v: Option<TensorViewMut<'a, C, 4>>,
    kv_lora_rank: usize,
    layout: KvCacheLayout,
    scales: KvScales,
    errors: Option<&'a mut SlotErrors>,
}

/// A cache's launch parameters; the guards keep the buffers' sync events until the launch is
/// queued. (Used by the ops that write the cache: the `rope` feature's, for now.)
#[cfg_attr(not(feature = "rope"), allow(dead_code))]
pub(crate) struct RawCache<'s> {
    pub params: ffi::wc_paged_kv_cache,
    _guards: Vec<SyncOnDrop<'s>>,
}

impl<'a, C: DType> KvCacheMut<'a, C> {
    /// K and V pages `[num_pages, page_size, num_kv_heads, head_dim]`, one layout; scales 1.
    pub fn new(k: TensorViewMut<'a, C, 4>, v: TensorViewMut<'a, C, 4>) -> Result<Self> {
        const OP: &str = "KvCacheMut::new";
        check_cache_dtype::<C>(OP)?;
        let layout = KvCacheLayout::of_views(OP, (k.shape(), k.strides()), (v.shape(), v.strides()))?;
        if k.stream().context().cu_ctx() != v.stream().context().cu_ctx() {
            return Err(Error::WrongDevice { op: OP, arg: "v_pages" });
        }
        Ok(Self { k, v: Some(v), kv_lora_rank: 0, layout, scales: KvScales::ONE, errors: None })
    }
    /// MLA's latent cache for writing ([`KvCacheView::latent`] reads it): pages `[num_pages,
    /// page_size, num_kv_heads (1), kv_lora_rank + rope_dim]`. Appending ops write each token's
    /// whole row `[c_kv | k_pe]` as its K and take no V.
    pub fn latent(pages: TensorViewMut<'a, C, 4>, kv_lora_rank: usize) -> Result<Self> {
        let layout = latent_layout::<C>("KvCacheMut::latent", pages.shape(), pages.strides(), kv_lora_rank)?;
        Ok(Self { k: pages, v: None, kv_lora_rank, layout, scales: KvScales::ONE, errors: None })
    }
    /// Whether this is MLA's latent cache (no V pages).
    pub fn is_latent(&self) -> bool {
        self.v.is_none()
    }
    /// Sets the FP8 scales (only an FP8 cache may have scales other than 1).
    pub fn with_scales(mut self, scales: KvScales) -> Result<Self> {
        check_scales::<C>("KvCacheMut::with_scales", scales)?;
        self.scales = scales;
        Ok(self)
    }
    /// Ops writing this cache add the number of out-of-range slots they skip to `errors`.
    pub fn count_errors_in(mut self, errors: &'a mut SlotErrors) -> Self {
        self.errors = Some(errors);
        self
    }
    /// The shape and strides K and V share.
    pub fn layout(&self) -> KvCacheLayout {
        self.layout
    }
    /// The FP8 quantization scales appends divide by (1 for bf16 / f16).
    pub fn scales(&self) -> KvScales {
        self.scales
    }
    /// A read-only view of the same cache.
    pub fn as_view(&self) -> KvCacheView<'_, C> {
        let k = self.k.as_view();
        let v = match &self.v {
            Some(v) => v.as_view(),
            // Inside the row: kv_lora_rank <= head_dim was checked by `latent`.
            None => k.narrow(3, 0, self.kv_lora_rank).expect("kv_lora_rank is within the row (checked by KvCacheMut::latent)"),
        };
        KvCacheView { k, v, layout: self.layout, scales: self.scales }
    }
}

/// What the ops that write the cache use (the `rope` feature's, for now).
#[cfg_attr(not(feature = "rope"), allow(dead_code))]
impl<C: DType> KvCacheMut<'_, C> {
    /// Checks that the cache can take rows of `num_kv_heads · head_dim` on `dev`.
    pub(crate) fn check_for(&self, op: &'static str, dev: &Device, num_kv_heads: usize, head_dim: usize) -> Result<()> {
        let l = self.layout;
        if (l.num_kv_heads, l.head_dim) != (num_kv_heads, head_dim) {
            return Err(Error::ShapeMismatch {
                op,
                arg: "cache",
                expected: format!("[num_pages, page_size, {num_kv_heads}, {head_dim}]"),
                got: format!("{:?}", l.shape()),
            });
        }
        crate::ops::check_device(op, "cache", dev, self.k.stream())?;
        if let Some(e) = &self.errors {
            crate::ops::check_device(op, "cache errors", dev, e.count.stream())?;
        }
        Ok(())
    }

    pub(crate) fn has_error_counter(&self) -> bool {
        self.errors.is_some()
    }

    /// Out-of-range slots counted so far by the attached counter (synchronizes).
    pub(crate) fn error_count(&self, dev: &Device) -> Result<Option<u32>> {
        self.errors.as_ref().map(|e| e.count(dev)).transpose()
    }

    /// The launch parameters. `extra` (a temporary counter under `debug-sync`) is used when no
    /// counter is attached.
    pub(crate) fn raw<'s>(&'s mut self, stream: &'s CudaStream, extra: Option<&'s mut SlotErrors>) -> RawCache<'s> {
        let (kp, gk) = self.k.device_ptr_mut(stream);
        let mut guards = vec![gk];
        let vp = self.v.as_mut().map_or(0, |v| {
            let (p, g) = v.device_ptr_mut(stream);
            guards.push(g);
            p
        });
        let counter = self.errors.as_deref_mut().or(extra);
        let error_count = counter.map(|c| {
            let (p, g) = c.count.device_ptr_mut(stream);
            guards.push(g);
            p as *mut u32
        });
        let l = self.layout;
        let params = ffi::wc_paged_kv_cache {
            k_pages: kp as *mut _,
            v_pages: vp as *mut _,
            num_pages: l.num_pages as i64,
            page_size: l.page_size as i64,
            page_stride: l.strides[0] as i64,
            slot_stride: l.strides[1] as i64,
            head_stride: l.strides[2] as i64,
            k_scale: self.scales.k,
            v_scale: self.scales.v,
            dtype: C::TAG,
            error_count: error_count.unwrap_or(std::ptr::null_mut()),
        };
        RawCache { params, _guards: guards }
    }
}

/// The block table and sequence lengths of one batch: `block_table` `[num_seqs,
/// max_pages_per_seq]` (page ids, i32), `seq_lens` `[num_seqs]` (i32). See the module docs.
#[derive(Debug)]
pub struct BlockTableView<'a> {
    block_table: TensorView<'a, i32, 2>,
    seq_lens: TensorView<'a, i32, 1>,
}

impl<'a> BlockTableView<'a> {
    /// Checks the shapes agree, the block table is contiguous and `seq_lens` dense. The kernels
    /// clamp a sequence's length to the table's row stride · page_size (the lengths are device
    /// data no host check sees), so a table with rows wider than its columns — a column slice —
    /// would let a length past its width read page ids beyond the view.
    pub fn new(block_table: TensorView<'a, i32, 2>, seq_lens: TensorView<'a, i32, 1>) -> Result<Self> {
        const OP: &str = "BlockTableView::new";
        check_shape(OP, "seq_lens", &seq_lens.shape(), &[block_table.shape()[0]])?;
        check_contiguous(OP, "block_table", &block_table.shape(), &block_table.strides())?;
        check_inner_dense(OP, "seq_lens", &seq_lens.strides())?;
        Ok(Self { block_table, seq_lens })
    }
    /// Sequences in the batch (rows of the block table).
    pub fn num_seqs(&self) -> usize {
        self.block_table.shape()[0]
    }
    /// Columns of the block table: the most pages any sequence may use.
    pub fn max_pages_per_seq(&self) -> usize {
        self.block_table.shape()[1]
    }
    /// Page ids `[num_seqs, max_pages_per_seq]` (i32; unused entries past a sequence's pages).
    pub fn block_table(&self) -> &TensorView<'a, i32, 2> {
        &self.block_table
    }
    /// Tokens of each sequence in the cache `[num_seqs]` (i32).
    pub fn seq_lens(&self) -> &TensorView<'a, i32, 1> {
        &self.seq_lens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_validated() {
        let l = KvCacheLayout::dense(10, 16, 8, 128).unwrap();
        assert_eq!(l.num_slots(), 160);
        assert_eq!(l.strides, [16 * 8 * 128, 8 * 128, 128, 1]);
        // Slot 37 = page 2, row 5.
        assert_eq!(l.offset(37, 3), 2 * 16 * 1024 + 5 * 1024 + 3 * 128);
        assert_eq!(l.extent(), 10 * 16 * 8 * 128);
        for ps in [0, 2, 12, 512] {
            let e = KvCacheLayout::dense(4, ps, 2, 64).unwrap_err();
            assert!(matches!(e, Error::Unsupported { what, .. } if what.starts_with("page_size")), "{e}");
        }
        assert!(matches!(KvCacheLayout::dense(0, 16, 2, 64).unwrap_err(), Error::Empty { .. }));
        // Padded pages are fine; overlapping rows and a strided head_dim are not.
        assert!(KvCacheLayout::new("t", [4, 8, 2, 64], [8 * 128 + 64, 128, 64, 1]).is_ok());
        assert!(KvCacheLayout::new("t", [4, 8, 2, 64], [8 * 128, 64, 64, 1]).is_err());
        assert!(KvCacheLayout::new("t", [4, 8, 2, 64], [2048, 256, 128, 2]).is_err());
    }

    /// The fields are public: a layout built by hand with zeros or huge values gives an answer,
    /// not a division by zero or an overflow.
    #[test]
    fn hand_built_layouts_do_not_panic() {
        let l = KvCacheLayout { num_pages: 0, page_size: 0, num_kv_heads: 0, head_dim: 64, strides: [1, 1, 1, 1] };
        assert_eq!(l.extent(), 0);
        assert_eq!(l.offset(5, 1), 5 + 1);
        let big = KvCacheLayout { num_pages: usize::MAX, page_size: 256, num_kv_heads: 2, head_dim: 64, strides: [usize::MAX, 1, 1, 1] };
        assert_eq!(big.num_slots(), usize::MAX);
        assert_eq!(big.extent(), usize::MAX);
    }

    #[test]
    fn k_and_v_must_share_the_layout() {
        let s = [4, 8, 2, 64];
        let d = crate::contiguous_strides(s);
        assert!(KvCacheLayout::of_views("t", (s, d), (s, d)).is_ok());
        let e = KvCacheLayout::of_views("t", (s, d), ([4, 8, 2, 32], d)).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { arg: "v_pages", .. }), "{e}");
        let padded = [d[0] + 64, d[1], d[2], 1];
        let e = KvCacheLayout::of_views("t", (s, d), (s, padded)).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    }

    #[test]
    fn scales_are_one_unless_fp8() {
        use half::bf16;
        assert!(check_scales::<bf16>("t", KvScales::ONE).is_ok());
        assert!(check_scales::<bf16>("t", KvScales::new(0.5, 1.0)).is_err());
        assert!(check_scales::<crate::F8E4M3>("t", KvScales::new(0.5, 0.02)).is_ok());
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(check_scales::<crate::F8E4M3>("t", KvScales::new(bad, 1.0)).is_err());
        }
        assert!(check_cache_dtype::<f32>("t").is_err());
        assert!(check_cache_dtype::<crate::F8E4M3>("t").is_ok());
    }
}
