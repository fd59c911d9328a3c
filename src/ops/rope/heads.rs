//! [`Qkv`]: the q and k heads (and, for appending ops, v) an op of the RoPE family works on —
//! one fused QKV view or separate views — and their validation.

use crate::ops::{check_device, check_fits_i32, check_inner_dense, check_no_overlap, check_nonempty};
use crate::{ffi, DType, Device, Error, Result, TensorView, TensorViewMut};
use cudarc::driver::{CudaStream, SyncOnDrop};

/// The heads an op rotates in place (q, k) and, for the appending ops, reads (v).
///
/// A cudarc mutable view borrows its whole buffer, so q and k that are interleaved in one
/// fused QKV buffer cannot be two `TensorViewMut`s: pass the fused buffer as one view instead
/// (the convention `qk_rms_norm` set). Separate q and k buffers (or q and k split out of one
/// buffer with `split_at_mut`) use [`Qkv::split`].
#[derive(Debug)]
pub enum Qkv<'b, 'a, T> {
    /// One view `[num_tokens, heads, head_dim]` whose heads are the q heads, then the k heads,
    /// then (optionally) the v heads: `heads` is `num_q_heads + num_kv_heads` or
    /// `num_q_heads + 2 · num_kv_heads` (the appending ops need the v heads; the others leave
    /// them untouched). Typically the output of a fused QKV projection, so the token stride may
    /// exceed `heads · head_dim`.
    Fused {
        /// The fused view `[num_tokens, heads, head_dim]`.
        qkv: &'b mut TensorViewMut<'a, T, 3>,
        /// The q heads: the first `num_q_heads` heads of each token.
        num_q_heads: usize,
        /// The k heads (next) and, when present, the v heads (after them).
        num_kv_heads: usize,
    },
    /// Separate views: q `[num_tokens, num_q_heads, head_dim]`, k `[num_tokens, num_kv_heads,
    /// head_dim]`, v like k (read only; the appending ops need it).
    Split {
        /// q `[num_tokens, num_q_heads, head_dim]`, rotated in place.
        q: &'b mut TensorViewMut<'a, T, 3>,
        /// k `[num_tokens, num_kv_heads, head_dim]`, rotated in place.
        k: &'b mut TensorViewMut<'a, T, 3>,
        /// v `[num_tokens, num_kv_heads, head_dim]`, for the appending ops; None otherwise.
        v: Option<&'b TensorView<'a, T, 3>>,
    },
}

impl<'b, 'a, T: DType> Qkv<'b, 'a, T> {
    /// [`Qkv::Fused`]: one view `[num_tokens, heads, head_dim]` holding the q, k (and v) heads.
    pub fn fused(qkv: &'b mut TensorViewMut<'a, T, 3>, num_q_heads: usize, num_kv_heads: usize) -> Self {
        Self::Fused { qkv, num_q_heads, num_kv_heads }
    }
    /// [`Qkv::Split`] without v: for the ops that do not append to a KV cache.
    pub fn split(q: &'b mut TensorViewMut<'a, T, 3>, k: &'b mut TensorViewMut<'a, T, 3>) -> Self {
        Self::Split { q, k, v: None }
    }
    /// [`Qkv::Split`] with v: for the appending ops (`rope_append_kv`, `qk_norm_rope_append_kv`).
    pub fn split_with_v(q: &'b mut TensorViewMut<'a, T, 3>, k: &'b mut TensorViewMut<'a, T, 3>, v: &'b TensorView<'a, T, 3>) -> Self {
        Self::Split { q, k, v: Some(v) }
    }

    /// Validates the views (shapes, strides, device) and returns their layout.
    pub(crate) fn layout(&self, op: &'static str, dev: &Device, need_v: bool) -> Result<HeadsLayout> {
        match self {
            Self::Fused { qkv, num_q_heads, num_kv_heads } => {
                check_device(op, "qkv", dev, qkv.stream())?;
                HeadsLayout::fused(op, (qkv.shape(), qkv.strides()), *num_q_heads, *num_kv_heads, need_v)
            }
            Self::Split { q, k, v } => {
                check_device(op, "q", dev, q.stream())?;
                check_device(op, "k", dev, k.stream())?;
                if let Some(v) = v {
                    check_device(op, "v", dev, v.stream())?;
                }
                let v = v.map(|v| (v.shape(), v.strides()));
                HeadsLayout::split(op, (q.shape(), q.strides()), (k.shape(), k.strides()), v, need_v)
            }
        }
    }

    /// Device pointers (q, k, v; v is 0 when absent); the guards keep the buffers' sync events
    /// until the launch is queued. `layout` is what [`Qkv::layout`] returned.
    pub(crate) fn raw<'s>(&'s mut self, stream: &'s CudaStream, layout: &HeadsLayout) -> RawHeads<'s> {
        let size = std::mem::size_of::<T>() as u64;
        match self {
            Self::Fused { qkv, .. } => {
                let (base, g) = qkv.device_ptr_mut(stream);
                let (nq, nk) = (layout.num_q_heads as u64, layout.num_kv_heads as u64);
                // One head in all: its head stride is any value (the view's extent does not
                // bound a size-1 dimension's stride), and no pointer below uses it.
                let hs = if nq + nk > 1 || layout.v_strides.is_some() { (layout.q_strides[1] as u64) * size } else { 0 };
                let v = if layout.v_strides.is_some() { base + (nq + nk) * hs } else { 0 };
                RawHeads { q: base, k: base + nq * hs, v, _guards: vec![g] }
            }
            Self::Split { q, k, v } => {
                let (qp, gq) = q.device_ptr_mut(stream);
                let (kp, gk) = k.device_ptr_mut(stream);
                let mut guards = vec![gq, gk];
                let vp = v.map_or(0, |v| {
                    let (p, g) = v.device_ptr(stream);
                    guards.push(g);
                    p
                });
                RawHeads { q: qp, k: kp, v: vp, _guards: guards }
            }
        }
    }
}

pub(crate) struct RawHeads<'s> {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    _guards: Vec<SyncOnDrop<'s>>,
}

/// Validated sizes and (token, head) strides of q, k and v.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeadsLayout {
    pub num_tokens: usize,
    pub num_q_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub q_strides: [usize; 2],
    pub k_strides: [usize; 2],
    /// Present when the op reads v (and the caller gave it).
    pub v_strides: Option<[usize; 2]>,
}

type Dims = ([usize; 3], [usize; 3]);

impl HeadsLayout {
    fn fused(op: &'static str, (shape, strides): Dims, nq: usize, nk: usize, need_v: bool) -> Result<Self> {
        let [num_tokens, heads, head_dim] = shape;
        let with_v = nq.checked_add(nk.saturating_mul(2));
        let ok = nk > 0 && if need_v { with_v == Some(heads) } else { nq.checked_add(nk) == Some(heads) || with_v == Some(heads) };
        if !ok {
            let v = if need_v { format!(" + {nk} v") } else { String::new() };
            return Err(Error::ShapeMismatch {
                op,
                arg: "qkv",
                expected: format!("[num_tokens, {nq} q + {nk} k{v} heads, head_dim] with num_kv_heads >= 1"),
                got: format!("{shape:?}"),
            });
        }
        check_nonempty(op, "qkv (head_dim)", &[head_dim])?;
        check_inner_dense(op, "qkv", &strides)?;
        check_no_overlap(op, "qkv", &shape, &strides)?;
        let layout = Self {
            num_tokens,
            num_q_heads: nq,
            num_kv_heads: nk,
            head_dim,
            q_strides: [strides[0], strides[1]],
            k_strides: [strides[0], strides[1]],
            v_strides: (need_v).then_some([strides[0], strides[1]]),
        };
        layout.check_sizes(op)?;
        Ok(layout)
    }

    fn split(op: &'static str, q: Dims, k: Dims, v: Option<Dims>, need_v: bool) -> Result<Self> {
        let [num_tokens, nq, head_dim] = q.0;
        let nk = k.0[1];
        let expect_k = [num_tokens, nk, head_dim];
        crate::ops::check_shape(op, "k", &k.0, &expect_k)?;
        check_nonempty(op, "k (heads, head_dim)", &k.0[1..])?;
        check_inner_dense(op, "q", &q.1)?;
        check_inner_dense(op, "k", &k.1)?;
        check_no_overlap(op, "q", &q.0, &q.1)?;
        check_no_overlap(op, "k", &k.0, &k.1)?;
        let v_strides = match (need_v, v) {
            (false, _) => None,
            (true, None) => {
                return Err(Error::ShapeMismatch { op, arg: "v", expected: format!("{expect_k:?} (Qkv::split_with_v)"), got: "no v".into() })
            }
            (true, Some(v)) => {
                crate::ops::check_shape(op, "v", &v.0, &expect_k)?;
                check_inner_dense(op, "v", &v.1)?;
                Some([v.1[0], v.1[1]])
            }
        };
        let layout = Self {
            num_tokens,
            num_q_heads: nq,
            num_kv_heads: nk,
            head_dim,
            q_strides: [q.1[0], q.1[1]],
            k_strides: [k.1[0], k.1[1]],
            v_strides,
        };
        layout.check_sizes(op)?;
        Ok(layout)
    }

    /// The kernels index tokens (grid) and a token's heads · head_dim (items, and q, k, v of
    /// one token) with i32; a token's items (at most (q + 3 k heads) · head_dim) within
    /// [`check_token_items`]'s bound.
    fn check_sizes(&self, op: &'static str) -> Result<()> {
        check_fits_i32(op, "num_tokens", self.num_tokens)?;
        let per_token = (self.num_q_heads.saturating_add(self.num_kv_heads.saturating_mul(3))).saturating_mul(self.head_dim);
        check_token_items(op, "(num_q_heads + 3 · num_kv_heads) · head_dim", per_token)
    }

    /// The C description of the heads (pointers from [`Qkv::raw`]).
    pub(crate) fn ffi(&self, raw: &RawHeads<'_>, dtype: ffi::wc_dtype) -> ffi::wc_qk_heads {
        ffi::wc_qk_heads {
            q: raw.q as *mut _,
            k: raw.k as *mut _,
            num_tokens: self.num_tokens as i64,
            num_q_heads: self.num_q_heads as i64,
            num_kv_heads: self.num_kv_heads as i64,
            head_dim: self.head_dim as i64,
            q_token_stride: self.q_strides[0] as i64,
            q_head_stride: self.q_strides[1] as i64,
            k_token_stride: self.k_strides[0] as i64,
            k_head_stride: self.k_strides[1] as i64,
            dtype,
        }
    }
}

/// rope.cu's items kernel (rope, append_kv and their fusions) refuses a token of more than
/// `i32::MAX / 2` items (an item: one rotated pair or one copied element, or a vector of them),
/// which its loops' counters need as margin; `bound` (elements per token that bound its items)
/// is held to it here so that the caller gets this error instead of the launcher's.
pub(crate) fn check_token_items(op: &'static str, what: &'static str, bound: usize) -> Result<()> {
    if bound > i32::MAX as usize / 2 {
        return Err(Error::Unsupported { op, what, value: format!("{bound} (> {})", i32::MAX / 2) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contiguous_strides;

    #[test]
    fn fused_views_hold_q_k_and_optionally_v() {
        let s = [5, 48, 128];
        let st = [64 * 128, 128, 1]; // a QKV row of 64 heads, 48 of them in the view
        let l = HeadsLayout::fused("t", (s, st), 32, 8, true).unwrap();
        assert_eq!((l.num_q_heads, l.num_kv_heads, l.head_dim), (32, 8, 128));
        assert_eq!(l.v_strides, Some([64 * 128, 128]));
        // Without v: q + k or q + k + v heads.
        assert!(HeadsLayout::fused("t", (s, st), 32, 8, false).unwrap().v_strides.is_none());
        assert!(HeadsLayout::fused("t", ([5, 40, 128], st), 32, 8, false).is_ok());
        // An appending op needs the v heads.
        let e = HeadsLayout::fused("t", ([5, 40, 128], st), 32, 8, true).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { arg: "qkv", .. }), "{e}");
        assert!(HeadsLayout::fused("t", ([5, 41, 128], st), 32, 8, false).is_err());
        assert!(HeadsLayout::fused("t", ([5, 32, 128], st), 32, 0, false).is_err(), "k heads are required");
        // Overlapping heads and a strided head_dim are rejected.
        assert!(HeadsLayout::fused("t", (s, [64 * 128, 64, 1]), 32, 8, true).is_err());
        assert!(HeadsLayout::fused("t", (s, [64 * 256, 256, 2]), 32, 8, true).is_err());
        assert!(matches!(HeadsLayout::fused("t", ([5, 48, 0], st), 32, 8, true).unwrap_err(), Error::Empty { .. }));
        // Overflowing head counts do not panic.
        assert!(HeadsLayout::fused("t", (s, st), usize::MAX, usize::MAX, true).is_err());
        // A token of 2^30 + 1024 elements: past the items kernel's bound, named here rather
        // than refused by the launcher (1,024 q + 1 k + 1 v heads of 2^20; 1,020 q heads fit).
        let d = 1 << 20;
        let big = |nq: usize| HeadsLayout::fused("t", ([1, nq + 2, d], [(nq + 2) * d, d, 1]), nq, 1, true);
        assert!(matches!(big(1024).unwrap_err(), Error::Unsupported { .. }));
        assert!(big(1020).is_ok());
    }

    #[test]
    fn split_views_agree_on_tokens_and_head_dim() {
        let d = |s: [usize; 3]| (s, contiguous_strides(s));
        let l = HeadsLayout::split("t", d([7, 16, 64]), d([7, 4, 64]), Some(d([7, 4, 64])), true).unwrap();
        assert_eq!((l.num_tokens, l.num_q_heads, l.num_kv_heads), (7, 16, 4));
        assert_eq!(l.k_strides, [256, 64]);
        assert!(HeadsLayout::split("t", d([7, 16, 64]), d([7, 4, 64]), None, false).unwrap().v_strides.is_none());
        let e = HeadsLayout::split("t", d([7, 16, 64]), d([7, 4, 64]), None, true).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { arg: "v", .. }), "{e}");
        let e = HeadsLayout::split("t", d([7, 16, 64]), d([6, 4, 64]), None, false).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { arg: "k", .. }), "{e}");
        let e = HeadsLayout::split("t", d([7, 16, 64]), d([7, 4, 80]), None, false).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { arg: "k", .. }), "{e}");
        let e = HeadsLayout::split("t", d([7, 16, 64]), d([7, 4, 64]), Some(d([7, 2, 64])), true).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { arg: "v", .. }), "{e}");
        // Gaps between heads and tokens are fine; overlapping k heads are not.
        assert!(HeadsLayout::split("t", ([7, 16, 64], [16 * 72 + 8, 72, 1]), d([7, 4, 64]), None, false).is_ok());
        assert!(HeadsLayout::split("t", d([7, 16, 64]), ([7, 4, 64], [256, 32, 1]), None, false).is_err());
        // Zero q heads is allowed (k only); zero tokens too (a no-op).
        assert!(HeadsLayout::split("t", d([7, 0, 64]), d([7, 4, 64]), None, false).is_ok());
        assert!(HeadsLayout::split("t", d([0, 16, 64]), d([0, 4, 64]), None, false).is_ok());
    }
}
