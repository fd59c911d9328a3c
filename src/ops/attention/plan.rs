//! The attention launch plan: which kernel a batch runs on, and its split-KV factor, from the
//! sequence lengths and the device's occupancy (cuda/attention_gqa.cu, cuda/attention_sm90.cu).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::{check_heads, wgmma_supports};
use crate::ops::{check_fits_i32, check_status};
use crate::{ffi, DType, Device, Error, Result};

/// Which attention kernel runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttentionKernel {
    /// [`AttentionPlan::new`]'s choice: wgmma for prefill batches on compute capability 9.0
    /// with head dims (64, 64) or (128, 128) (K/V in the query dtype, or an FP8 paged cache:
    /// [`AttentionPlan::with_kv`]) and for MLA decode with more than 16 query rows per sequence
    /// (max_q_len · heads; K/V in the query dtype); mma.sync otherwise — and everywhere when the
    /// environment variable `WARPCORE_ATTENTION_KERNEL` is `mma.sync`.
    #[default]
    Auto,
    /// The Hopper kernels (sm_90a only): prefill at head dims (64, 64) or (128, 128), K/V in
    /// the query dtype or an FP8 paged cache, 128-row query tiles (cuda/attention_sm90.cu); MLA
    /// decode at (576, 512), K/V in the query dtype, 64-row tiles (cuda/attention_mla_sm90.cu).
    Wgmma,
    /// The portable kernels (cuda/attention_gqa.cu, and cuda/attention_mla.cu for MLA decode's
    /// head dims (576, 512); any sm_80+ GPU, every supported shape).
    MmaSync,
}

/// The launch shape of one batch: computed on the host from the sequence lengths, once per
/// batch, and reused by every layer (the workspace size is fixed by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionPlan {
    /// Sequences in the batch.
    pub num_seqs: usize,
    /// Query tokens of all sequences (the rows of q and out).
    pub total_q: usize,
    /// The longest sequence's queries: the grid covers this many per sequence.
    pub max_q_len: usize,
    /// Query heads.
    pub num_q_heads: usize,
    /// K/V heads (num_q_heads is a multiple: the GQA group).
    pub num_kv_heads: usize,
    /// Head size of q and k.
    pub head_dim: usize,
    /// Head size of v and out (differs from head_dim for MLA: (192, 128), (576, 512)).
    pub head_dim_v: usize,
    /// Key splits per (sequence, kv head, query tile); 1 = no split, no workspace.
    pub num_splits: usize,
    /// The kernel the batch runs on: `Wgmma` or `MmaSync` (never `Auto`).
    pub kernel: AttentionKernel,
    /// Whether the wgmma prefill kernel loads a key tile by TMA where it can (K/V in the query
    /// dtype, contiguous or paged with pages of at least 8 slots laid out back to back, every
    /// key of the tile present): true unless the environment variable `WARPCORE_ATTENTION_TMA`
    /// is `off`; false sends every tile by cp.async. The other kernels ignore it.
    pub tma: bool,
    /// Whether a split plan's merge launches as a programmatic dependent of the attention
    /// kernel on compute capability 9.0 (PDL: the merge's launch overlaps the attention's
    /// last CTAs; it waits for the attention to complete before reading the partials): true
    /// unless the environment variable `WARPCORE_PDL` is `off`. Elsewhere, and when false, the
    /// merge follows in plain stream order.
    pub merge_pdl: bool,
    /// Whether the portable MLA kernel (`MmaSync` at head dims (576, 512)) runs more than 16
    /// query rows per sequence in its 64-row configuration: the device gives a block the shared
    /// memory it needs (`wc_attention_mla_wide_smem`: about 147 KB; true on sm_80 and sm_90,
    /// false on the ~99 KB GPUs, sm_86/89/120, where it runs 16-row tiles). The kernel decides
    /// by the same rule; the planner sizes its tiles and splits by this. Other kernels ignore it.
    pub mla_wide: bool,
}

/// Most key splits a plan has (the planner's bound; [`super::attention`] refuses more).
pub const MAX_SPLITS: usize = 64;

/// Query rows per CTA of the mma.sync kernel's prefill configuration: 4 warps of two 16-row
/// tiles up to head_dim 128, of one above (cuda/attention_gqa.cu, kPrefillTiles).
fn prefill_rows(head_dim: usize, head_dim_v: usize) -> usize {
    if head_dim.max(head_dim_v) <= 128 {
        128
    } else {
        64
    }
}

/// Keys per tile of the mma.sync kernel (cuda/attention_gqa.cu, Cfg::kBN): 64; 32 at head_dim
/// 256, and in the two-tile prefill configuration above head_dim 64.
fn keys_per_tile(head_dim: usize, head_dim_v: usize, decode: bool) -> usize {
    let d = head_dim.max(head_dim_v);
    if d > 192 || (!decode && d > 64 && d <= 128) {
        32
    } else {
        64
    }
}

impl AttentionPlan {
    /// Plans a batch of sequences with `q_lens[s]` queries and `kv_lens[s]` keys, on the
    /// kernel [`AttentionKernel::Auto`] picks — or on mma.sync when the environment variable
    /// `WARPCORE_ATTENTION_KERNEL` is `mma.sync`, which moves a whole program (the model, the
    /// bench) to the portable kernel without a rebuild.
    ///
    /// Split-KV: each (sequence, kv head, query tile) may be split along the keys (at least 4
    /// key tiles per split, at most 64 splits) so that the CTAs fill the GPU in whole waves;
    /// the slots are the occupancy calculator's CTAs per SM of the kernel configuration
    /// (`wc_attention_ctas_per_sm`) × SMs, and `choose_splits` has the rule.
    pub fn new(
        dev: &Device,
        q_lens: &[usize],
        kv_lens: &[usize],
        num_q_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        head_dim_v: usize,
    ) -> Result<Self> {
        Self::with_kernel(dev, q_lens, kv_lens, num_q_heads, num_kv_heads, head_dim, head_dim_v, AttentionKernel::Auto)
    }

    /// [`AttentionPlan::new`] on a chosen kernel: `Error::Unsupported` when `Wgmma` cannot run
    /// this batch here (not compute capability 9.0, other head dims, or a decode batch —
    /// `max_q_len · group ≤ 16` — which the mma.sync kernel's decode configuration serves).
    /// K/V are taken in the query dtype.
    #[allow(clippy::too_many_arguments)]
    pub fn with_kernel(
        dev: &Device,
        q_lens: &[usize],
        kv_lens: &[usize],
        num_q_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        head_dim_v: usize,
        kernel: AttentionKernel,
    ) -> Result<Self> {
        Self::with_kv::<half::bf16>(dev, q_lens, kv_lens, num_q_heads, num_kv_heads, head_dim, head_dim_v, kernel)
    }

    /// [`AttentionPlan::with_kernel`] for K/V of type `C`, the cache the batch will read. With
    /// [`crate::F8E4M3`] (an FP8 paged cache) `Auto` picks the wgmma kernel for prefill on
    /// compute capability 9.0 at head dims (64, 64) or (128, 128) (it converts the cache's
    /// tiles to f16 in shared memory) and the portable kernel otherwise — decode, MLA, other
    /// head dims and GPUs — whose occupancy then sizes the splits; `Wgmma` where it does not
    /// apply is `Error::Unsupported`. Any other `C` plans as `with_kernel`.
    #[allow(clippy::too_many_arguments)]
    pub fn with_kv<C: DType>(
        dev: &Device,
        q_lens: &[usize],
        kv_lens: &[usize],
        num_q_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        head_dim_v: usize,
        kernel: AttentionKernel,
    ) -> Result<Self> {
        const OP: &str = "AttentionPlan::new";
        // The occupancy query's K/V dtype: e4m3 for an FP8 cache, else the query dtype's (bf16).
        let fp8 = C::TAG == ffi::wc_dtype_WC_E4M3;
        let kv_dtype = if fp8 { C::TAG } else { ffi::wc_dtype_WC_BF16 };
        if q_lens.len() != kv_lens.len() {
            return Err(Error::ShapeMismatch {
                op: OP,
                arg: "kv_lens",
                expected: format!("{} lengths (one per sequence)", q_lens.len()),
                got: format!("{}", kv_lens.len()),
            });
        }
        check_heads(OP, num_q_heads, num_kv_heads, head_dim, head_dim_v)?;
        let group = num_q_heads / num_kv_heads;
        let max_q_len = q_lens.iter().copied().max().unwrap_or(0);
        let total_q = q_lens.iter().try_fold(0usize, |a, &q| a.checked_add(q));
        let total_q = total_q.ok_or_else(|| Error::Unsupported { op: OP, what: "q_lens (their sum overflows usize)", value: format!("{} sequences", q_lens.len()) })?;
        let decode = head_dim == head_dim_v && max_q_len.saturating_mul(group) <= 16;
        // MLA decode: the wgmma kernel's 64-row tiles for more than 16 rows per sequence.
        let mla = (head_dim, head_dim_v) == super::MLA_DECODE;
        let mla_decode_rows = mla && max_q_len.saturating_mul(group) <= 16;
        let wgmma_fits = wgmma_supports(dev, head_dim, head_dim_v, fp8) && !(decode || mla_decode_rows);
        let env = env_switches();
        let portable = env.portable;
        let kernel = match kernel {
            AttentionKernel::Auto if wgmma_fits && !portable => AttentionKernel::Wgmma,
            AttentionKernel::Auto => AttentionKernel::MmaSync,
            AttentionKernel::Wgmma if !wgmma_fits => {
                return Err(Error::Unsupported {
                    op: OP,
                    what: "wgmma attention (compute capability 9.0, head dims (64, 64), (128, 128) or (576, 512), max_q_len · group > 16, K/V in the query dtype or (not at (576, 512)) an FP8 cache)",
                    value: format!("cc {:?}, head dims ({head_dim}, {head_dim_v}), max_q_len {max_q_len}, group {group}, K/V e4m3: {fp8}", dev.info().compute_capability),
                })
            }
            k => k,
        };
        let (tma, merge_pdl) = (env.tma, env.merge_pdl);
        // SAFETY: a host-only query of a compile-time constant.
        let mla_wide = dev.info().max_shared_per_block_optin >= unsafe { ffi::wc_attention_mla_wide_smem(fp8 as i32) } as usize;
        let mut plan = Self { num_seqs: q_lens.len(), total_q, max_q_len, num_q_heads, num_kv_heads, head_dim, head_dim_v, num_splits: 1, kernel, tma, merge_pdl, mla_wide };
        let (bm, _) = plan.tile_shape();
        // MLA decode at a few queries per sequence splits like decode: its 64-row partials are
        // no more bytes than the latent rows a split reads, and 128 heads are compute-bound.
        let wave_model = decode || (mla && max_q_len <= 8);
        let base_ctas = q_lens.iter().fold(0usize, |a, &q| a.saturating_add(q.saturating_mul(group).div_ceil(bm).saturating_mul(num_kv_heads)));
        let max_splits = plan.max_splits(kv_lens.iter().copied().max().unwrap_or(0));
        if base_ctas > 0 && max_splits > 1 {
            let per_sm = ctas_per_sm(dev, kernel, [num_q_heads, num_kv_heads, head_dim, head_dim_v], max_q_len, kv_dtype)?;
            plan.num_splits = choose_splits(base_ctas, per_sm * dev.info().sm_count as usize, max_splits, wave_model);
        }
        Ok(plan)
    }

    /// Query rows and keys per tile of the plan's kernel configuration (MLA decode,
    /// cuda/attention_mla.cu: 16 rows up to 16 per sequence, else 64 where `mla_wide`; 32-key tiles;
    /// attention_mla_sm90.cu: 64 rows, 64-key tiles).
    pub(super) fn tile_shape(&self) -> (usize, usize) {
        let (hd, hdv) = (self.head_dim, self.head_dim_v);
        let rows = self.max_q_len.saturating_mul(self.num_q_heads / self.num_kv_heads.max(1));
        let mla = (hd, hdv) == super::MLA_DECODE;
        match self.kernel {
            AttentionKernel::Wgmma if mla => (64, 64),
            AttentionKernel::Wgmma => (128, 128),
            _ if mla => (if rows <= 16 || !self.mla_wide { 16 } else { 64 }, 32),
            _ if hd == hdv && rows <= 16 => (16, keys_per_tile(hd, hdv, true)),
            _ => (prefill_rows(hd, hdv), keys_per_tile(hd, hdv, false)),
        }
    }

    /// Whether `group` query heads per K/V head over `max_q_len` queries fit the grid: a
    /// sequence's rows (queries · group) in at most 65535 tiles of the plan's kernel (the grid's
    /// y dimension).
    pub(super) fn rows_fit_grid(&self, group: usize) -> bool {
        self.max_q_len <= i32::MAX as usize && self.max_q_len.saturating_mul(group) <= self.tile_shape().0 * 65535
    }

    /// The most key splits this plan's kernel takes over `max_kv_len` keys: at least 4 key
    /// tiles per split, at most 64 splits. (The plan's own `num_splits` is at most this; a
    /// tuner may try any count up to it: `warpcore bench --tune`.)
    pub fn max_splits(&self, max_kv_len: usize) -> usize {
        (max_kv_len / (4 * self.tile_shape().1)).clamp(1, MAX_SPLITS)
    }

    /// f32 elements of workspace the batch needs (0 without split-KV; `usize::MAX`, which no
    /// workspace holds, for a hand-built plan whose product overflows).
    pub fn workspace_len(&self) -> usize {
        if self.num_splits <= 1 {
            return 0;
        }
        self.num_splits.saturating_mul(self.total_q).saturating_mul(self.num_q_heads).saturating_mul(self.head_dim_v.saturating_add(1))
    }
}

/// Key splits for `base` CTAs on `slots` CTA slots (CTAs per SM × SMs), at most `max_splits`.
///
/// Decode: the wave model — `n = base · splits / slots` slot-fulls of equal CTAs run in ⌈n⌉
/// waves, so the GPU is busy `n / ⌈n⌉` of the time; take the fewest splits within 95 % of the
/// best any count up to `max_splits` reaches. Its partials (16 rows per CTA) are noise next to
/// the K/V bytes. Prefill: its partials (up to 128 rows × head_dim f32 per CTA) and their
/// merge cost real bandwidth, so only a batch that does not fill the GPU once is split, into as
/// many as fit in that one wave.
fn choose_splits(base: usize, slots: usize, max_splits: usize, decode: bool) -> usize {
    if base == 0 || slots == 0 {
        return 1;
    }
    if !decode {
        return (slots / base).clamp(1, max_splits);
    }
    let busy = |s: usize| {
        let n = base.saturating_mul(s) as f64 / slots as f64;
        n / n.ceil()
    };
    let best = (1..=max_splits).map(busy).fold(0.0, f64::max);
    (1..=max_splits).find(|&s| busy(s) >= 0.95 * best).unwrap_or(1)
}

/// CTAs per SM of the kernel configuration a batch runs on: `wc_attention_ctas_per_sm`, the
/// occupancy calculator on this device, asked once per distinct argument set (a decode loop
/// plans every step). `heads`: (num_q_heads, num_kv_heads, head_dim, head_dim_v); `kv_dtype`:
/// WC_E4M3 for an FP8 cache's configurations, else WC_BF16 (the query dtype's).
fn ctas_per_sm(dev: &Device, kernel: AttentionKernel, heads: [usize; 4], max_q_len: usize, kv_dtype: ffi::wc_dtype) -> Result<usize> {
    const OP: &str = "AttentionPlan::new";
    type Key = (usize, AttentionKernel, [usize; 4], usize, ffi::wc_dtype);
    static KNOWN: OnceLock<Mutex<HashMap<Key, usize>>> = OnceLock::new();
    let [num_q_heads, num_kv_heads, head_dim, head_dim_v] = heads;
    let key = (dev.info().ordinal, kernel, heads, max_q_len, kv_dtype);
    let known = KNOWN.get_or_init(Default::default);
    if let Some(&n) = known.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(n);
    }
    check_fits_i32(OP, "max_q_len", max_q_len)?;
    let p = ffi::wc_attention_params {
        num_q_heads: num_q_heads as i32,
        num_kv_heads: num_kv_heads as i32,
        head_dim: head_dim as i32,
        head_dim_v: head_dim_v as i32,
        max_q_len: max_q_len as i32,
        num_splits: 1,
        dtype: ffi::wc_dtype_WC_BF16,
        kv_dtype,
        kernel: if kernel == AttentionKernel::Wgmma { ffi::wc_attention_kernel_WC_ATTENTION_WGMMA } else { ffi::wc_attention_kernel_WC_ATTENTION_MMA },
        ..Default::default()
    };
    dev.context().bind_to_thread()?;
    let mut n = 0i32;
    // SAFETY: p and n are valid for the call; it reads p's scalar fields only and launches nothing.
    check_status(OP, unsafe { ffi::wc_attention_ctas_per_sm(&p, &mut n) })?;
    let n = n.max(1) as usize;
    known.lock().unwrap_or_else(|e| e.into_inner()).insert(key, n);
    Ok(n)
}

/// The environment's switches of the attention plan, read once per process (as the FP8 and
/// ternary planners read theirs): `WARPCORE_ATTENTION_KERNEL=mma.sync` keeps every planned
/// attention on the portable kernel, `WARPCORE_ATTENTION_TMA=off` loads the Hopper kernels' key
/// tiles by cp.async, `WARPCORE_PDL=off` launches the split merge in plain stream order.
struct EnvSwitches {
    portable: bool,
    tma: bool,
    merge_pdl: bool,
}

fn env_switches() -> &'static EnvSwitches {
    static ENV: OnceLock<EnvSwitches> = OnceLock::new();
    ENV.get_or_init(|| {
        let is = |name: &str, value: &str| std::env::var(name).is_ok_and(|v| v == value);
        EnvSwitches {
            portable: is("WARPCORE_ATTENTION_KERNEL", "mma.sync"),
            tma: !is("WARPCORE_ATTENTION_TMA", "off"),
            merge_pdl: !is("WARPCORE_PDL", "off"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{choose_splits, AttentionKernel, AttentionPlan};
    use crate::ffi;

    fn mla_plan(kernel: AttentionKernel, max_q_len: usize, mla_wide: bool) -> AttentionPlan {
        let (hd, hdv) = crate::ops::attention::MLA_DECODE;
        AttentionPlan {
            num_seqs: 1,
            total_q: max_q_len,
            max_q_len,
            num_q_heads: 128,
            num_kv_heads: 1,
            head_dim: hd,
            head_dim_v: hdv,
            num_splits: 1,
            kernel,
            tma: true,
            merge_pdl: true,
            mla_wide,
        }
    }

    /// The portable MLA kernel's tile as the kernel picks it (cuda/attention_mla.cu
    /// `launch_mla`): 64 rows above 16 per sequence where the device gives a block the wide
    /// configuration's shared memory, 16 rows otherwise; that shared memory fits an A100 or
    /// H200 block (163 / 227 KB) and not a ~99 KB one (sm_86/89/120).
    #[test]
    fn mla_tiles_follow_the_devices_shared_memory() {
        for fp8 in [0, 1] {
            // SAFETY: a host-only function returning a constant.
            let wide = unsafe { ffi::wc_attention_mla_wide_smem(fp8) } as usize;
            assert!(wide > 101_376 && wide <= 166_912, "fp8 {fp8}: {wide} bytes");
        }
        // 16 heads on one latent head: one query is 16 rows, two are 32.
        let heads16 = |q, wide| AttentionPlan { num_q_heads: 16, ..mla_plan(AttentionKernel::MmaSync, q, wide) };
        assert_eq!(heads16(1, true).tile_shape().0, 16);
        assert_eq!(heads16(2, true).tile_shape().0, 64);
        assert_eq!(heads16(2, false).tile_shape().0, 16);
        assert_eq!(mla_plan(AttentionKernel::MmaSync, 1, false).tile_shape().0, 16);
        assert_eq!(mla_plan(AttentionKernel::Wgmma, 1, false).tile_shape().0, 64);
    }

    /// DeepSeek-V3 prefill (128 heads on one latent head) in one MLA batch: 8192 tokens are
    /// 2^20 rows, which the 64-row tiles hold in 16384 of the grid's 65535 (refused before
    /// 2026-12-03 by a bound that assumed 16-row tiles); 32767 tokens fit, 32768 do not. The
    /// 16-row configuration holds 8191 tokens.
    #[test]
    fn the_grid_bound_follows_the_kernels_tile() {
        for kernel in [AttentionKernel::Wgmma, AttentionKernel::MmaSync] {
            assert!(mla_plan(kernel, 8192, true).rows_fit_grid(128));
            assert!(mla_plan(kernel, 32767, true).rows_fit_grid(128));
            assert!(!mla_plan(kernel, 32768, true).rows_fit_grid(128));
        }
        assert!(mla_plan(AttentionKernel::MmaSync, 8191, false).rows_fit_grid(128));
        assert!(!mla_plan(AttentionKernel::MmaSync, 8192, false).rows_fit_grid(128));
        assert!(!mla_plan(AttentionKernel::Wgmma, usize::MAX, true).rows_fit_grid(1));
    }

    /// The decode bar shapes on the H200: 132 SMs, 2 CTAs per SM of the head_dim-128
    /// decode configuration (264 slots), 64-key tiles.
    #[test]
    fn decode_splits_fill_whole_waves() {
        // b64 × kv 4096: 512 CTAs are 1.94 waves (97 % busy): no split.
        assert_eq!(choose_splits(512, 264, 16, true), 1);
        // b16 × kv 32768: 128 CTAs fill 48 % of one wave; two splits fill 97 %.
        assert_eq!(choose_splits(128, 264, 64, true), 2);
        // b1 × kv 131072: 8 CTAs; 32 splits make 256 of 264 (33 would fill all 264: 32 is the
        // fewest within 95 %).
        assert_eq!(choose_splits(8, 264, 64, true), 32);
        // At 3 CTAs per SM, 512 CTAs are 1.29 waves (65 % busy); 3 splits make 3.88 (97 %).
        assert_eq!(choose_splits(512, 396, 16, true), 3);
        // max_splits caps; no CTA, no split.
        assert_eq!(choose_splits(8, 264, 4, true), 4);
        assert_eq!(choose_splits(0, 264, 64, true), 1);
    }

    #[test]
    fn prefill_splits_only_within_one_wave() {
        assert_eq!(choose_splits(2048, 264, 64, false), 1);
        assert_eq!(choose_splits(300, 264, 64, false), 1);
        // 100 CTAs: 2 splits (200 of 264 slots), never a ragged second wave.
        assert_eq!(choose_splits(100, 264, 64, false), 2);
        assert_eq!(choose_splits(4, 264, 16, false), 16);
    }
}
